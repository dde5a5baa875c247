//! Test support: real keys (ring for EC, the openssl CLI for RSA), real
//! signed tokens, and the workspace's real HTTP test IdP
//! (`ztgate_testkit::idp`) serving OIDC discovery and a JWKS of those keys.
// Fixture code may panic on a broken fixture, like the tests using it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use ztgate_filter::{BuildContext, Decision, Facts, Filter, Reason, RequestView, TlsFacts};
use ztgate_jwt::{config, JwtFilter};
// Re-exported for the test files; each test binary uses some of them.
#[allow(unused_imports)]
pub use ztgate_testkit::idp::Idp;
#[allow(unused_imports)]
pub use ztgate_testkit::wait::eventually;

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

/// The JWKS entries of `keys`.
pub fn jwks(keys: &[&TestKey]) -> Vec<Value> {
    keys.iter().map(|k| k.jwk.clone()).collect()
}

/// The workspace's test IdP (`ztgate_testkit::idp`), publishing `keys`.
pub async fn idp_with(keys: &[&TestKey]) -> Idp {
    Idp::start_with_jwks(&jwks(keys)).await.unwrap()
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
    let raw: config::JwtSection = serde_yaml::from_str(yaml).unwrap();
    match ztgate_jwt::build(&raw, &ctx(), "jwt") {
        Ok(f) => f,
        Err(p) => panic!("config problems: {p:?}"),
    }
}

/// A discovery issuer section for `idp` plus extra YAML lines (indented 4).
pub fn discovery_yaml(idp: &Idp, extra: &str) -> String {
    format!(
        "issuers:\n  - issuer: {}\n    discovery: true\n    allow_insecure_http: true\n    audiences: [orders]\n    algorithms: [ES256, RS256]\n    http_timeout: 2s\n{extra}",
        idp.issuer
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
