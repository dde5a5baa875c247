//! A small but real OIDC provider on loopback: discovery document, JWKS,
//! and ES256 access tokens signed with a key made at start. The demo and the
//! end-to-end tests point ztgate's `jwt` filter at it over real HTTP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A running identity provider.
pub struct Idp {
    pub addr: SocketAddr,
    pub issuer: String,
    kid: String,
    key: EncodingKey,
    /// How many times the JWKS was fetched.
    pub jwks_fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Idp {
    /// Start on 127.0.0.1 with a fresh P-256 key.
    pub async fn start() -> anyhow::Result<Self> {
        let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let raw = kp.public_key_raw();
        // Uncompressed SEC1 point: 0x04 || X || Y.
        let (x, y) = match raw {
            [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
            _ => anyhow::bail!("unexpected P-256 public key encoding"),
        };
        let kid = "demo-key-1".to_owned();
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]});
        let key = EncodingKey::from_ec_der(&kp.serialize_der());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}");
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let (discovery, jwks, counter) = (discovery.clone(), jwks.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
                    let path = req.split_whitespace().nth(1).unwrap_or("/");
                    let (status, body) = match path {
                        "/.well-known/openid-configuration" => ("200 OK", discovery.to_string()),
                        "/jwks" => {
                            counter.fetch_add(1, Ordering::Relaxed);
                            ("200 OK", jwks.to_string())
                        }
                        _ => ("404 Not Found", "{}".to_owned()),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncache-control: max-age=300\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        Ok(Self {
            addr,
            issuer,
            kid,
            key,
            jwks_fetches: fetches,
            task,
        })
    }

    /// Sign an access token (`typ: at+jwt`) for `sub` with `scope`, valid
    /// for `ttl_secs` (negative: already expired); `extra` claims are merged.
    pub fn token(
        &self,
        sub: &str,
        scope: &str,
        aud: &str,
        ttl_secs: i64,
        extra: Value,
    ) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
        let mut claims = json!({
            "iss": self.issuer, "sub": sub, "aud": aud, "scope": scope,
            "iat": now.min(now + ttl_secs) - 1, "exp": now + ttl_secs,
        });
        if let (Some(c), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            c.extend(extra);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, &claims, &self.key).context("sign token")
    }
}

impl Idp {
    /// Take the provider down: its port refuses connections from now on
    /// (an IdP outage). Tokens it signed stay valid.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
