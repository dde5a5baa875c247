//! RFC 9449 DPoP on the client side: a P-256 proof key, its RFC 7638
//! thumbprint (what an IdP puts in the token's `cnf.jkt`), and proofs for
//! one request each — what a real DPoP client sends next to its token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A client's DPoP key pair.
pub struct DpopKey {
    jwk: Value,
    key: EncodingKey,
    /// Makes every proof's `jti` unique within the process.
    counter: AtomicU64,
}

impl DpopKey {
    pub fn generate() -> anyhow::Result<Self> {
        let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let (x, y) = match kp.public_key_raw() {
            [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
            _ => anyhow::bail!("unexpected P-256 public key encoding"),
        };
        let jwk = json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        });
        Ok(Self {
            jwk,
            key: EncodingKey::from_ec_der(&kp.serialize_der()),
            counter: AtomicU64::new(0),
        })
    }

    /// RFC 7638 thumbprint: the token's `cnf.jkt`.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            self.jwk["x"].as_str().unwrap_or_default(),
            self.jwk["y"].as_str().unwrap_or_default()
        );
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// A fresh proof (new `jti`) for `POST htu` with access token `token`.
    pub fn proof(&self, htu: &str, token: &str) -> anyhow::Result<String> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let jti = format!("{}-{n}-{now}", std::process::id());
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
        let claims = json!({
            "htm": "POST", "htu": htu, "iat": now, "jti": jti,
            "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &self.key, Algorithm::ES256)
            .context("sign DPoP proof")?;
        Ok(format!("{signing_input}.{sig}"))
    }
}
