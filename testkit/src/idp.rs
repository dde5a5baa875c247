//! A small but real OIDC provider on loopback: discovery document, JWKS,
//! and ES256 access tokens signed with a key made at start. The demo, the
//! end-to-end tests and the `jwt` crate's own tests point the `jwt` filter
//! at it over real HTTP; it is the one test IdP of the workspace.
//!
//! Beyond the happy path, a test can make it misbehave the ways real IdPs
//! do: serve other keys ([`Idp::set_jwks`], a rotation), answer slowly
//! ([`Idp::set_jwks_delay`]), answer 503 ([`Idp::set_down`]), advertise
//! another issuer ([`Idp::advertise_issuer`], a mix-up), or go away
//! ([`Idp::stop`]); it counts discovery and JWKS fetches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running identity provider; dropping it stops the server.
pub struct Idp {
    pub addr: SocketAddr,
    pub issuer: String,
    kid: String,
    key: EncodingKey,
    /// How many times the JWKS was fetched.
    pub jwks_fetches: Arc<AtomicUsize>,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

/// What the server answers with; tests change it while it runs.
struct State {
    issuer: String,
    jwks: Mutex<Value>,
    jwks_fetches: Arc<AtomicUsize>,
    discovery_fetches: AtomicUsize,
    /// Answer 503 to everything.
    down: AtomicBool,
    /// `issuer` in the discovery document when it is not the real one.
    advertised_issuer: Mutex<Option<String>>,
    jwks_delay: Mutex<Duration>,
}

/// A poisoned lock only means a test panicked elsewhere: keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Idp {
    /// Start on 127.0.0.1 with a fresh P-256 key, which the JWKS publishes
    /// and [`Idp::token`] signs with.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_inner(None).await
    }

    /// Start on 127.0.0.1 publishing exactly `keys` (public JWKs) in its
    /// JWKS: for tests that sign tokens with keys of their own. Its own key
    /// is not published, so [`Idp::token`]'s tokens do not verify.
    pub async fn start_with_jwks(keys: &[Value]) -> anyhow::Result<Self> {
        Self::start_inner(Some(keys)).await
    }

    async fn start_inner(keys: Option<&[Value]>) -> anyhow::Result<Self> {
        let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let raw = kp.public_key_raw();
        // Uncompressed SEC1 point: 0x04 || X || Y.
        let (x, y) = match raw {
            [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
            _ => anyhow::bail!("unexpected P-256 public key encoding"),
        };
        let kid = "demo-key-1".to_owned();
        let own = json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        });
        let jwks = match keys {
            None => json!({ "keys": [own] }),
            Some(keys) => json!({ "keys": keys }),
        };
        let key = EncodingKey::from_ec_der(&kp.serialize_der());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}");
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(State {
            issuer: issuer.clone(),
            jwks: Mutex::new(jwks),
            jwks_fetches: jwks_fetches.clone(),
            discovery_fetches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            advertised_issuer: Mutex::new(None),
            jwks_delay: Mutex::new(Duration::ZERO),
        });
        let served = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(s, served.clone()));
            }
        });
        Ok(Self {
            addr,
            issuer,
            kid,
            key,
            jwks_fetches,
            state,
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

    /// The JWKS it publishes now (`{"keys": [...]}`): e.g. to write as a
    /// static `keys_file` that verifies its tokens without it running.
    pub fn jwks(&self) -> Value {
        lock(&self.state.jwks).clone()
    }

    /// Publish `keys` (public JWKs) from now on: a key rotation.
    pub fn set_jwks(&self, keys: &[Value]) {
        *lock(&self.state.jwks) = json!({ "keys": keys });
    }

    /// Answer JWKS requests after `delay` (a slow IdP).
    pub fn set_jwks_delay(&self, delay: Duration) {
        *lock(&self.state.jwks_delay) = delay;
    }

    /// Answer 503 to everything while `down` (an IdP that is up but
    /// failing; [`Idp::stop`] takes the port away instead).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Put `issuer` in the discovery document instead of the real one
    /// (`None`: the real one again), to test the mix-up defence.
    pub fn advertise_issuer(&self, issuer: Option<String>) {
        *lock(&self.state.advertised_issuer) = issuer;
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How many times the discovery document was fetched.
    pub fn discovery_fetches(&self) -> usize {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }

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

/// One HTTP/1.1 exchange: read the request head, answer, close.
async fn serve(mut s: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body) = answer(&state, &path).await;
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncache-control: max-age=300\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

async fn answer(state: &State, path: &str) -> (&'static str, String) {
    if state.down.load(Ordering::SeqCst) {
        return ("503 Service Unavailable", "{}".into());
    }
    match path {
        "/.well-known/openid-configuration" => {
            state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
            let issuer = lock(&state.advertised_issuer)
                .clone()
                .unwrap_or_else(|| state.issuer.clone());
            let doc = json!({
                "issuer": issuer,
                "jwks_uri": format!("{}/jwks", state.issuer),
                "id_token_signing_alg_values_supported": ["ES256"],
            });
            ("200 OK", doc.to_string())
        }
        "/jwks" => {
            state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            let delay = *lock(&state.jwks_delay);
            tokio::time::sleep(delay).await;
            ("200 OK", lock(&state.jwks).to_string())
        }
        _ => ("404 Not Found", "{}".into()),
    }
}
