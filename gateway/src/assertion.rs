//! The signed identity assertion (`x-ztgate-assertion`).
//!
//! Upstreams that must not trust plain headers verify a short-lived JWT the
//! gateway signs (ES256) over what the filters verified: SPIFFE ID, `sub`,
//! `iss`, scopes, device fingerprint. The public keys are served on the admin
//! listener at `/.well-known/jwks.json`, including `previous_keys`, so a key
//! can be rotated with overlap: publish the new key as `key` and the old one
//! in `previous_keys` until every assertion signed by it has expired.
//!
//! Signing costs tens of microseconds, so assertions are cached per identity
//! and reused while at least half their lifetime remains. The cache is keyed
//! by a SHA-256 of the whole identity (length-prefixed fields), so two
//! identities can never share an entry, and it is claimed from the
//! gateway's memory by signing key, issuer, audience and TTL: a reload that
//! changes none of them keeps it.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openssl::bn::BigNumContext;
use openssl::ec::PointConversionForm;
use openssl::pkey::PKey;
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use ztgate_filter::{Facts, Memory};

/// Cached assertions (one per distinct identity).
const CACHE_CAPACITY: usize = 10_000;

/// Why a key file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AssertionKeyError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("{0}: not a PEM EC P-256 key")]
    NotP256(String),
}

/// A P-256 key: its signing half (current key only) and its public JWK.
struct Key {
    kid: String,
    jwk: Value,
    signer: Option<EncodingKey>,
}

fn load_key(path: &Path, signing: bool) -> Result<Key, AssertionKeyError> {
    let name = path.display().to_string();
    let pem =
        std::fs::read(path).map_err(|e| AssertionKeyError::Read(name.clone(), e.to_string()))?;
    let bad = || AssertionKeyError::NotP256(name.clone());
    let pkey = PKey::private_key_from_pem(&pem).map_err(|_| bad())?;
    let ec = pkey.ec_key().map_err(|_| bad())?;
    if ec.group().curve_name() != Some(openssl::nid::Nid::X9_62_PRIME256V1) {
        return Err(bad());
    }
    let mut ctx = BigNumContext::new().map_err(|_| bad())?;
    let point = ec
        .public_key()
        .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
        .map_err(|_| bad())?;
    let (x, y) = match point.as_slice() {
        [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
        _ => return Err(bad()),
    };
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    // RFC 7638 thumbprint as the kid: stable across restarts and replicas.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"});
    let signer = if signing {
        let der = pkey.private_key_to_pkcs8().map_err(|_| bad())?;
        Some(EncodingKey::from_ec_der(&der))
    } else {
        None
    };
    Ok(Key { kid, jwk, signer })
}

/// The assertion signer of one config generation.
pub struct Asserter {
    current: Key,
    previous: Vec<Key>,
    issuer: String,
    audience: String,
    ttl: Duration,
    cache: Arc<AssertionCache>,
}

/// Signed assertions by identity digest, with their expiry.
type AssertionCache = Mutex<lru::LruCache<[u8; 32], (Arc<str>, SystemTime)>>;

/// The cache key: SHA-256 over every field, each length-prefixed so that
/// no two different identities encode alike.
fn identity_digest<'a>(fields: impl IntoIterator<Item = Option<&'a str>>) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in fields {
        match f {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                h.update((v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
        }
    }
    h.finalize().into()
}

impl Asserter {
    pub fn load(
        key: &Path,
        previous: &[std::path::PathBuf],
        issuer: String,
        audience: String,
        ttl: Duration,
        memory: &Memory,
    ) -> Result<Self, Vec<AssertionKeyError>> {
        let mut errs = Vec::new();
        let current = load_key(key, true).map_err(|e| errs.push(e)).ok();
        let previous: Vec<Key> = previous
            .iter()
            .filter_map(|p| load_key(p, false).map_err(|e| errs.push(e)).ok())
            .collect();
        match current {
            Some(current) if errs.is_empty() => {
                let identity = format!(
                    "assertion.cache\n{}\n{issuer}\n{audience}\n{}",
                    current.kid,
                    ttl.as_millis()
                );
                let cache = memory.claim(&identity, || {
                    Mutex::new(lru::LruCache::new(
                        NonZeroUsize::new(CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN),
                    ))
                });
                Ok(Self {
                    current,
                    previous,
                    issuer,
                    audience,
                    ttl,
                    cache,
                })
            }
            _ => Err(errs),
        }
    }

    /// The JWKS document served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        let keys: Vec<&Value> = std::iter::once(&self.current.jwk)
            .chain(self.previous.iter().map(|k| &k.jwk))
            .collect();
        json!({ "keys": keys })
    }

    /// The assertion for the verified identity in `facts`, from the cache
    /// when one with at least half its lifetime left exists.
    pub fn assertion(&self, facts: &Facts, now: SystemTime) -> Option<Arc<str>> {
        let spiffe = facts.spiffe_id();
        let sub = facts.subject();
        let iss = facts.token().map(|t| t.issuer().as_ref());
        let scopes = facts.scopes();
        let fp = facts.fingerprint();
        let key = identity_digest(
            [spiffe, sub, iss, fp]
                .into_iter()
                .chain(scopes.iter().map(|s| Some(s.as_str()))),
        );
        let scope = scopes.join(" ");
        if let Some((tok, exp)) = self.cache.lock().get(&key) {
            if exp.duration_since(now).unwrap_or_default() > self.ttl / 2 {
                return Some(tok.clone());
            }
        }
        let iat = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let exp = iat + self.ttl.as_secs().max(1);
        let claims = json!({
            "iss": self.issuer, "aud": self.audience, "iat": iat, "exp": exp,
            "spiffe_id": spiffe, "sub": sub, "token_iss": iss, "scope": scope,
            "device_fingerprint": fp,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.current.kid.clone());
        header.typ = Some("ztgate-assertion+jwt".into());
        let signer = self.current.signer.as_ref()?;
        let tok: Arc<str> = match jsonwebtoken::encode(&header, &claims, signer) {
            Ok(t) => Arc::from(t),
            Err(e) => {
                tracing::error!(error = %e, "could not sign identity assertion");
                return None;
            }
        };
        self.cache
            .lock()
            .put(key, (tok.clone(), UNIX_EPOCH + Duration::from_secs(exp)));
        Some(tok)
    }
}
