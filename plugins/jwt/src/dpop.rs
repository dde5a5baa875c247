//! RFC 9449 DPoP for gRPC: the proof in the `DPoP` header shows the caller
//! holds the private key the access token is bound to (`cnf.jkt`).
//!
//! Checks follow §4.3: one proof, `typ: dpop+jwt`, an asymmetric `alg` on
//! the issuer's allow-list, a public `jwk` in the header, its signature,
//! `htm`/`htu` equal to this request, `iat` inside the window, `ath` equal
//! to the hash of the presented token, and a `jti` never seen within the
//! window (replay cache). §7.1: the proof key's RFC 7638 thumbprint must
//! equal the token's `cnf.jkt`.

use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lru::LruCache;
use parking_lot::Mutex;
use reqwest::Url;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use std::sync::Arc;

use crate::keys::parse_jwk;
use crate::token::{self, ClaimsView};
use crate::verify::verify_signature;
use crate::JwtError;

/// Proofs are small (a header with a public key and five claims); a cap
/// keeps a hostile header cheap.
pub const MAX_PROOF_SIZE: usize = 4 * 1024;
/// Seen `jti`s kept: at 1 000 DPoP requests/s and a 60 s window, 100 000
/// covers the window; beyond that the oldest are evicted first.
pub const REPLAY_CAPACITY: usize = 100_000;
/// `jti` values longer than this are refused (they are meant to be random
/// identifiers, not payloads).
const MAX_JTI_LEN: usize = 256;

/// What the proof must match about this request.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    pub method: &'a str,
    pub authority: Option<&'a str>,
    pub path: &'a str,
    /// The access token presented with the proof.
    pub token: &'a str,
}

/// A proof that passed every stateless check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint of the proof key.
    pub jkt: String,
    /// Hash of (jkt, jti): the replay-cache key.
    pub replay_key: [u8; 32],
    /// When the proof stops being acceptable (`iat` + window).
    pub expires: SystemTime,
}

/// Verify a proof against the request. `algorithms` is the issuer's
/// allow-list; `window` bounds `|now - iat|`.
pub fn verify_proof(
    proof: &str,
    req: &ProofRequest<'_>,
    algorithms: &[jsonwebtoken::Algorithm],
    window: Duration,
    now: SystemTime,
) -> Result<VerifiedProof, JwtError> {
    let jws =
        token::split(proof, MAX_PROOF_SIZE).map_err(|_| JwtError::DpopInvalid("not a JWT"))?;
    let header_json = token::header_json(&jws).map_err(|_| JwtError::DpopInvalid("header"))?;
    let header = token::header(&header_json).map_err(|_| JwtError::DpopInvalid("header"))?;
    if !header.typ_is("dpop+jwt") {
        return Err(JwtError::DpopInvalid("typ is not dpop+jwt"));
    }
    if header.crit.is_some() {
        return Err(JwtError::DpopInvalid("crit"));
    }
    let alg = header
        .algorithm()
        .ok()
        .filter(|a| algorithms.contains(a))
        .ok_or(JwtError::DpopInvalid("alg not allowed"))?;
    let jwk = header.jwk.ok_or(JwtError::DpopInvalid("no jwk"))?;
    let jwk = serde_json::from_str(jwk.get()).map_err(|_| JwtError::DpopInvalid("jwk"))?;
    // parse_jwk refuses private members: a proof must never carry the key.
    let key = Arc::new(parse_jwk(&jwk).map_err(|_| JwtError::DpopInvalid("jwk"))?);
    if !key.accepts(alg) {
        return Err(JwtError::DpopInvalid("alg does not fit jwk"));
    }
    verify_signature(&jws, alg, &[&key]).map_err(|_| JwtError::DpopInvalid("signature"))?;

    let json = token::claims_json(&jws).map_err(|_| JwtError::DpopInvalid("claims"))?;
    let claims = ClaimsView::parse(&json).map_err(|_| JwtError::DpopInvalid("claims"))?;
    let str_claim = |name: &'static str| claims.str(name).ok().flatten();
    if str_claim("htm").as_deref() != Some(req.method) {
        return Err(JwtError::DpopInvalid("htm does not match"));
    }
    let htu = str_claim("htu").ok_or(JwtError::DpopInvalid("htu missing"))?;
    let authority = req
        .authority
        .ok_or(JwtError::DpopInvalid("request has no authority"))?;
    if !same_target(&htu, authority, req.path) {
        return Err(JwtError::DpopInvalid("htu does not match"));
    }
    let iat = claims
        .numeric_date("iat")
        .ok()
        .flatten()
        .ok_or(JwtError::DpopInvalid("iat missing"))?;
    let now_s = i64::try_from(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
        .unwrap_or(i64::MAX);
    let win = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    if now_s.saturating_sub(iat).abs() > win {
        return Err(JwtError::DpopInvalid("iat outside the window"));
    }
    let jti = str_claim("jti")
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN)
        .ok_or(JwtError::DpopInvalid("jti missing"))?;
    let ath = str_claim("ath").ok_or(JwtError::DpopInvalid("ath missing"))?;
    let want_ath = URL_SAFE_NO_PAD.encode(Sha256::digest(req.token.as_bytes()));
    if !bool::from(want_ath.as_bytes().ct_eq(ath.as_bytes())) {
        return Err(JwtError::DpopInvalid("ath does not match the token"));
    }
    let jkt = key.thumbprint.clone();
    let mut h = Sha256::new();
    h.update(jkt.as_bytes());
    h.update(b".");
    h.update(jti.as_bytes());
    let expires =
        UNIX_EPOCH + Duration::from_secs(u64::try_from(iat.saturating_add(win)).unwrap_or(0));
    Ok(VerifiedProof {
        jkt,
        replay_key: h.finalize().into(),
        expires,
    })
}

/// `htu` names `https://<authority><path>`, ignoring query and fragment
/// (§4.3 item 9), with URL normalisation (case of host, default port).
fn same_target(htu: &str, authority: &str, path: &str) -> bool {
    let (Ok(mut got), Ok(want)) = (
        Url::parse(htu),
        Url::parse(&format!("https://{authority}{path}")),
    ) else {
        return false;
    };
    got.set_query(None);
    got.set_fragment(None);
    got.scheme() == "https"
        && got.host() == want.host()
        && got.port_or_known_default() == want.port_or_known_default()
        && got.path() == want.path()
        && got.username().is_empty()
        && got.password().is_none()
}

/// Seen proofs, bounded; an entry lives until its proof's window closes.
pub struct ReplayCache {
    seen: Mutex<LruCache<[u8; 32], SystemTime>>,
}

impl ReplayCache {
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            seen: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Record a proof; `Err(DpopReplay)` if it was seen and is still live.
    pub fn check_and_insert(&self, proof: &VerifiedProof, now: SystemTime) -> Result<(), JwtError> {
        let mut seen = self.seen.lock();
        if let Some(exp) = seen.get(&proof.replay_key) {
            if *exp > now {
                return Err(JwtError::DpopReplay);
            }
        }
        seen.put(proof.replay_key, proof.expires);
        Ok(())
    }
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(NonZeroUsize::new(REPLAY_CAPACITY).unwrap_or(NonZeroUsize::MIN))
    }
}

/// Check the proof key against the token binding (constant time).
pub fn check_binding(proof: &VerifiedProof, cnf_jkt: &str) -> Result<(), JwtError> {
    if bool::from(proof.jkt.as_bytes().ct_eq(cnf_jkt.as_bytes())) {
        Ok(())
    } else {
        Err(JwtError::DpopBindingMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_compare_normalises() {
        assert!(same_target(
            "https://API.example:443/a.B/C?x=1#f",
            "api.example",
            "/a.B/C"
        ));
        assert!(!same_target(
            "http://api.example/a.B/C",
            "api.example",
            "/a.B/C"
        ));
        assert!(!same_target(
            "https://api.example/a.B/D",
            "api.example",
            "/a.B/C"
        ));
        assert!(!same_target(
            "https://evil.example/a.B/C",
            "api.example",
            "/a.B/C"
        ));
        assert!(!same_target(
            "https://api.example:8443/a.B/C",
            "api.example",
            "/a.B/C"
        ));
        assert!(same_target(
            "https://api.example:8443/a.B/C",
            "api.example:8443",
            "/a.B/C"
        ));
    }
}
