//! RFC 9449 DPoP on the generator's side: the client's P-256 proof key,
//! its RFC 7638 thumbprint (what the minted token carries as `cnf.jkt`),
//! and a fresh proof for every call.
//!
//! A proof is built for the cost of one ES256 signature: the header (with
//! the public `jwk`) is encoded once, the claims are formatted without a
//! JSON tree, and the key is parsed once (ring `EcdsaKeyPair`). The signing
//! runs on the generator's cores, never on the proxy's.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use http::HeaderValue;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};

use crate::token::{read_pem_key, TokenError};

/// A client's DPoP key, ready to sign proofs.
pub struct DpopKey {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// base64url of the proof header (`typ`, `alg`, `jwk`), plus the `.`.
    header_b64: String,
    x: String,
    y: String,
    /// Makes every `jti` unique within the run.
    serial: AtomicU64,
    /// Makes `jti` unique across runs (and generator processes).
    run_id: u64,
}

impl DpopKey {
    /// Load a P-256 private key (PKCS#8 PEM, as `openssl genpkey -algorithm
    /// EC -pkeyopt ec_paramgen_curve:P-256` writes it).
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let der = read_pem_key(path)?;
        Self::from_pkcs8(&der).map_err(|why| TokenError::BadKey {
            path: path.display().to_string(),
            alg: "ES256 (DPoP)",
            why,
        })
    }

    /// From PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| e.to_string())?;
        // Uncompressed point: 0x04 || x (32) || y (32).
        let p = key.public_key().as_ref();
        let (x, y) = p
            .get(1..33)
            .zip(p.get(33..65))
            .ok_or_else(|| "unexpected public key encoding".to_string())?;
        let (x, y) = (B64.encode(x), B64.encode(y));
        let header = serde_json::json!({
            "typ": "dpop+jwt",
            "alg": "ES256",
            "jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y},
        });
        let run_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(Self {
            key,
            rng,
            header_b64: format!("{}.", B64.encode(header.to_string())),
            x,
            y,
            serial: AtomicU64::new(0),
            run_id,
        })
    }

    /// RFC 7638 thumbprint of the public key: the token's `cnf.jkt`.
    pub fn thumbprint(&self) -> String {
        // Required members only, lexicographic order, no whitespace.
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            self.x, self.y
        );
        B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ))
    }

    /// A fresh proof for `POST` to `htu_json` (the target URI, already a
    /// JSON string literal with its quotes) with `ath_b64` (the token hash,
    /// see [`ath`]): current `iat`, unique `jti`.
    pub fn proof(&self, htu_json: &str, ath_b64: &str) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let claims = format!(
            r#"{{"htm":"POST","htu":{htu_json},"iat":{now},"jti":"{:x}-{n}","ath":"{ath_b64}"}}"#,
            self.run_id
        );
        let mut jws = String::with_capacity(self.header_b64.len() + claims.len() * 4 / 3 + 90);
        jws.push_str(&self.header_b64);
        B64.encode_string(claims.as_bytes(), &mut jws);
        let sig = self
            .key
            .sign(&self.rng, jws.as_bytes())
            .map_err(|_| TokenError::Sign)?;
        jws.push('.');
        B64.encode_string(sig.as_ref(), &mut jws);
        Ok(jws)
    }
}

/// `ath`: base64url(SHA-256(access token)).
pub fn ath(token: &str) -> String {
    B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// A DPoP-bound token and the key it is bound to: what every call sends as
/// `authorization: DPoP <token>` plus a fresh `dpop` proof.
pub struct DpopAuth {
    authorization: HeaderValue,
    ath: String,
    key: DpopKey,
}

impl DpopAuth {
    pub fn new(token: &str, key: DpopKey) -> Result<Self, TokenError> {
        let mut authorization =
            HeaderValue::from_str(&format!("DPoP {token}")).map_err(|_| TokenError::BadHeader)?;
        authorization.set_sensitive(true);
        Ok(Self {
            authorization,
            ath: ath(token),
            key,
        })
    }

    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    /// The `dpop` header for one call to `htu_json` (a JSON string
    /// literal). Marked sensitive: a value used once has no business in
    /// the HPACK table.
    pub fn proof_header(&self, htu_json: &str) -> Result<HeaderValue, TokenError> {
        let proof = self.key.proof(htu_json, &self.ath)?;
        let mut v = HeaderValue::from_str(&proof).map_err(|_| TokenError::BadHeader)?;
        v.set_sensitive(true);
        Ok(v)
    }

    pub fn thumbprint(&self) -> String {
        self.key.thumbprint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DpopKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        DpopKey::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn part(jws: &str, i: usize) -> serde_json::Value {
        let p = jws.split('.').nth(i).unwrap();
        serde_json::from_slice(&B64.decode(p).unwrap()).unwrap()
    }

    #[test]
    fn proofs_verify_with_the_header_jwk_and_carry_fresh_claims() {
        let k = key();
        let htu = serde_json::to_string("https://localhost:8443/orders.v1.Orders/Get").unwrap();
        let a = ath("tok.en.sig");
        let p1 = k.proof(&htu, &a).unwrap();
        let p2 = k.proof(&htu, &a).unwrap();
        let (h, c1, c2) = (part(&p1, 0), part(&p1, 1), part(&p2, 1));
        assert_eq!(h["typ"], "dpop+jwt");
        assert_eq!(h["alg"], "ES256");
        assert!(h["jwk"].get("d").is_none(), "no private member");
        assert_eq!(c1["htm"], "POST");
        assert_eq!(c1["htu"], "https://localhost:8443/orders.v1.Orders/Get");
        assert_eq!(c1["ath"], a);
        assert_ne!(c1["jti"], c2["jti"], "jti must be unique per proof");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(c1["iat"].as_u64().unwrap().abs_diff(now) <= 2);
        // The signature verifies with the key in the header.
        let mut point = vec![4u8];
        point.extend(B64.decode(h["jwk"]["x"].as_str().unwrap()).unwrap());
        point.extend(B64.decode(h["jwk"]["y"].as_str().unwrap()).unwrap());
        let (input, sig) = p1.rsplit_once('.').unwrap();
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
            .verify(input.as_bytes(), &B64.decode(sig).unwrap())
            .unwrap();
    }

    #[test]
    fn thumbprint_is_rfc7638() {
        // RFC 7638 §3.1 computes over the canonical JSON of the required
        // members; check ours against an independent serialisation.
        let k = key();
        let h = part(&k.proof("\"https://x/y\"", "a").unwrap(), 0);
        let jwk = &h["jwk"];
        let members: std::collections::BTreeMap<&str, &serde_json::Value> =
            ["y", "x", "kty", "crv"]
                .into_iter()
                .map(|m| (m, &jwk[m]))
                .collect();
        let canonical = serde_json::to_string(&members).unwrap();
        let want = B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ));
        assert_eq!(k.thumbprint(), want);
        assert_eq!(k.thumbprint().len(), 43);
    }

    #[test]
    fn auth_header_uses_the_dpop_scheme() {
        let a = DpopAuth::new("abc.def.ghi", key()).unwrap();
        assert_eq!(a.authorization().to_str().unwrap(), "DPoP abc.def.ghi");
        assert!(a.authorization().is_sensitive());
        let p = a.proof_header("\"https://h/p\"").unwrap();
        assert!(p.is_sensitive());
        assert_eq!(part(p.to_str().unwrap(), 1)["ath"], ath("abc.def.ghi"));
    }
}
