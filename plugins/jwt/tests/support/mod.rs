//! Test support: real keys (ring for EC, the openssl CLI for RSA), real
//! signed tokens, and a real HTTP IdP on 127.0.0.1 that serves OIDC
//! discovery and a JWKS and counts fetches.
// Fixture code may panic on a broken fixture, like the tests using it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use ztgate_filter::{BuildContext, Decision, Facts, Filter, Reason, RequestView, TlsFacts};
use ztgate_jwt::{raw, JwtFilter};

pub fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// A signing key with its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub enc: EncodingKey,
    pub jwk: Value,
    /// Public key PEM (RSA only), for the key-confusion attack.
    pub public_pem: Option<String>,
}

impl TestKey {
    pub fn es256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let public = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": b64(&public[1..33]), "y": b64(&public[33..65])});
        Self {
            alg: Algorithm::ES256,
            kid: kid.into(),
            enc: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
            public_pem: None,
        }
    }

    /// RSA-2048 made once per test binary with the openssl CLI (ring cannot
    /// generate RSA keys); `n` read back with `openssl rsa -modulus`.
    pub fn rs256(kid: &str) -> Self {
        static PEM: OnceLock<(String, String, String)> = OnceLock::new();
        let (pem, pubpem, n_hex) = PEM.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("ztgate-jwt-rsa-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let key = dir.join("key.pem");
            let ok = Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(&key)
                .status()
                .unwrap();
            assert!(ok.success());
            let modulus = Command::new("openssl")
                .args(["rsa", "-noout", "-modulus", "-in"])
                .arg(&key)
                .output()
                .unwrap();
            let pubout = Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&key)
                .output()
                .unwrap();
            let n_hex = String::from_utf8(modulus.stdout)
                .unwrap()
                .trim()
                .trim_start_matches("Modulus=")
                .to_owned();
            (
                std::fs::read_to_string(&key).unwrap(),
                String::from_utf8(pubout.stdout).unwrap(),
                n_hex,
            )
        });
        let n = hex::decode(n_hex).unwrap();
        Self {
            alg: Algorithm::RS256,
            kid: kid.into(),
            enc: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": b64(&n), "e": "AQAB"}),
            public_pem: Some(pubpem.clone()),
        }
    }
}

pub fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
        Algorithm::HS256 => "HS256",
        _ => unreachable!(),
    }
}

/// Sign any header and claims (raw JSON, so tests can add `crit`, `jku`, …).
pub fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

pub fn sign(key: &TestKey, claims: &Value) -> String {
    sign_raw(
        &json!({"alg": alg_name(key.alg), "typ": "at+jwt", "kid": key.kid}),
        claims,
        &key.enc,
        key.alg,
    )
}

pub fn now() -> SystemTime {
    SystemTime::now()
}

pub fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Good claims for `iss`, valid for 10 minutes from `now`.
pub fn claims(iss: &str, at: SystemTime) -> Value {
    let t = secs(at);
    json!({"iss": iss, "sub": "alice", "aud": "orders", "iat": t, "exp": t + 600,
           "scope": "orders.write orders.read orders.read", "client_id": "c1"})
}

/// A tiny real OIDC provider: discovery + JWKS over HTTP/1.1 on loopback.
pub struct Idp {
    pub addr: SocketAddr,
    pub jwks: Mutex<Value>,
    pub jwks_hits: AtomicUsize,
    pub discovery_hits: AtomicUsize,
    /// Answer 503 to everything.
    pub down: AtomicBool,
    /// `issuer` in the discovery document (to test mix-up defence).
    pub advertised_issuer: Mutex<Option<String>>,
    pub jwks_delay: Mutex<Duration>,
}

impl Idp {
    pub async fn start(keys: &[&TestKey]) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let idp = Arc::new(Self {
            addr: listener.local_addr().unwrap(),
            jwks: Mutex::new(
                json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}),
            ),
            jwks_hits: AtomicUsize::new(0),
            discovery_hits: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            advertised_issuer: Mutex::new(None),
            jwks_delay: Mutex::new(Duration::ZERO),
        });
        let srv = idp.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let srv = srv.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (status, body) = srv.answer(&path).await;
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncache-control: max-age=600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        idp
    }

    async fn answer(&self, path: &str) -> (&'static str, String) {
        if self.down.load(Ordering::SeqCst) {
            return ("503 Service Unavailable", "{}".into());
        }
        match path {
            "/.well-known/openid-configuration" => {
                self.discovery_hits.fetch_add(1, Ordering::SeqCst);
                let iss = self
                    .advertised_issuer
                    .lock()
                    .unwrap()
                    .clone()
                    .unwrap_or_else(|| self.issuer());
                (
                    "200 OK",
                    json!({"issuer": iss, "jwks_uri": format!("{}/jwks", self.issuer())})
                        .to_string(),
                )
            }
            "/jwks" => {
                self.jwks_hits.fetch_add(1, Ordering::SeqCst);
                let delay = *self.jwks_delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                ("200 OK", self.jwks.lock().unwrap().to_string())
            }
            _ => ("404 Not Found", "{}".into()),
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_keys(&self, keys: &[&TestKey]) {
        *self.jwks.lock().unwrap() =
            json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    }

    pub fn jwks_hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }
}

pub fn ctx() -> BuildContext {
    BuildContext {
        base_dir: std::env::temp_dir(),
        upstreams: vec![],
        pipeline: vec!["jwt".into()],
        ..Default::default()
    }
}

/// Build the filter from a YAML `jwt:` section.
pub fn build(yaml: &str) -> JwtFilter {
    let raw: raw::JwtSection = serde_yaml::from_str(yaml).unwrap();
    match ztgate_jwt::build(&raw, &ctx(), "jwt") {
        Ok(f) => f,
        Err(p) => panic!("config problems: {p:?}"),
    }
}

/// A discovery issuer section for `idp` plus extra YAML lines (indented 4).
pub fn discovery_yaml(idp: &Idp, extra: &str) -> String {
    format!(
        "issuers:\n  - issuer: {}\n    discovery: true\n    allow_insecure_http: true\n    audiences: [orders]\n    algorithms: [ES256, RS256]\n    http_timeout: 2s\n{extra}",
        idp.issuer()
    )
}

/// One request through the filter.
pub struct Req {
    pub headers: HeaderMap,
    pub tls: TlsFacts,
    pub now: SystemTime,
    pub path: String,
    pub authority: String,
}

impl Req {
    pub fn bearer(token: &str) -> Self {
        Self::with_auth(&format!("Bearer {token}"))
    }

    pub fn with_auth(auth: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_str(auth).unwrap());
        Self {
            headers,
            tls: TlsFacts::default(),
            now: now(),
            path: "/orders.v1.Orders/Get".into(),
            authority: "api.example:443".into(),
        }
    }

    pub fn at(mut self, t: SystemTime) -> Self {
        self.now = t;
        self
    }

    pub async fn run(&self, f: &JwtFilter) -> (Decision, Facts) {
        let view = RequestView {
            method: &Method::POST,
            path: &self.path,
            authority: Some(&self.authority),
            headers: &self.headers,
            tls: &self.tls,
            client_ip: None,
            socket_ip: None,
            now: self.now,
        };
        let mut facts = Facts::default();
        let d = f.evaluate(&view, &mut facts).await;
        (d, facts)
    }

    pub async fn reason(&self, f: &JwtFilter) -> Option<Reason> {
        match self.run(f).await.0 {
            Decision::Deny(d) => Some(d.reason),
            _ => None,
        }
    }
}

/// RFC 7638 thumbprint of an EC P-256 JWK, written out independently.
pub fn ec_thumbprint(jwk: &Value) -> String {
    let canon = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    b64(&Sha256::digest(canon.as_bytes()))
}

pub fn ath(token: &str) -> String {
    b64(&Sha256::digest(token.as_bytes()))
}
