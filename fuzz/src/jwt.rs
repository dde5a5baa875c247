//! `jwt`: token and DPoP proof parsing in `ztgate-jwt`.
//!
//! The first byte picks the entry point; the rest is its input:
//! - 0: a bearer token: `token::split`/`header_json`/`claims_json`,
//!   `verify::decode` and `Decoded::read` (the borrowed header and the
//!   claims view), then the pure header and claim rules (`check_header`,
//!   `check_claims`, `scopes`) against a fixed issuer policy;
//! - 1: a DPoP proof as sent (`dpop::verify_proof` with a fixed request);
//! - 2: DPoP claims (any bytes as the claims segment) in a proof the
//!   harness signs with a fixed P-256 key and header, so the fuzzer reaches
//!   the checks after the signature (`htm`, `htu` URL comparison, `iat`,
//!   `jti`, `ath`) instead of stopping at it;
//! - 3: a DPoP JOSE header (any bytes as the header segment) over fixed
//!   valid claims, signed the same way: `typ`, `crit`, `alg`, and the `jwk`
//!   (`parse_jwk`, `thumbprint`) from an attacker;
//! - 4: an access token's claims, signed as a real token of the policy's
//!   issuer: `verify::verify` down to `finish` (subject and scope headers,
//!   `cnf`);
//! - 5: a JWKS document (`KeySet::from_jwks`) and a Cache-Control value
//!   (`jwks::max_age`).
//!
//! Checked beyond "no panic": a token that parses has exactly the segments
//! it was split into; a verified proof's `jkt` is the RFC 7638 thumbprint
//! of the signing key, computed here independently.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey};
use sha2::{Digest, Sha256};
use ztgate_jwt::config::{CertBinding, DpopMode};
use ztgate_jwt::dpop::{self, ProofRequest};
use ztgate_jwt::keys::KeySet;
use ztgate_jwt::{jwks, token, verify, IssuerPolicy};

/// A P-256 key made for this harness only (`openssl ecparam -genkey -name
/// prime256v1`); it signs nothing but fuzz inputs.
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgH26iWBSI0P0ycfKC
WqlU4ttllfcBo9zkAuMh13cgUO6hRANCAAS5vXHm7QPfENDm/pg2mPYe11lRVYfH
BRrODaP0PB+MZj3/2pNolWwZltrO6nhOzZO2ReM57I2C4nwEQfYyjmvO
-----END PRIVATE KEY-----
";
const KEY_X: &str = "ub1x5u0D3xDQ5v6YNpj2HtdZUVWHxwUazg2j9DwfjGY";
const KEY_Y: &str = "Pf_ak2iVbBmW2s7qeE7Nk7ZF4znsjYLifARB9jKOa84";

/// The request every proof is checked against.
pub const METHOD: &str = "POST";
pub const AUTHORITY: &str = "api.example.com";
pub const PATH: &str = "/orders.v1.Orders/Get";
pub const ACCESS_TOKEN: &str = "access-token";
pub const ISSUER: &str = "https://idp.example.com";
/// "Now" for every check: 2023-11-14T22:13:20Z (seeds use it as `iat`).
pub const NOW: u64 = 1_700_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn request() -> ProofRequest<'static> {
    ProofRequest {
        method: METHOD,
        authority: Some(AUTHORITY),
        path: PATH,
        token: ACCESS_TOKEN,
    }
}

fn signing_key() -> &'static EncodingKey {
    static KEY: OnceLock<EncodingKey> = OnceLock::new();
    KEY.get_or_init(|| EncodingKey::from_ec_pem(KEY_PEM.as_bytes()).unwrap())
}

/// The public JWK of [`KEY_PEM`], as a JSON object text.
pub fn public_jwk() -> String {
    format!(r#"{{"kty":"EC","crv":"P-256","x":"{KEY_X}","y":"{KEY_Y}"}}"#)
}

/// RFC 7638 §3.2 thumbprint of [`KEY_PEM`], written out by hand.
fn expected_jkt() -> String {
    let canon = format!(r#"{{"crv":"P-256","kty":"EC","x":"{KEY_X}","y":"{KEY_Y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canon.as_bytes()))
}

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let jwks = format!(
            r#"{{"keys":[{}]}}"#,
            public_jwk().replace('}', r#","kid":"k1"}"#)
        );
        KeySet::from_jwks(jwks.as_bytes()).unwrap()
    })
}

fn policy() -> &'static IssuerPolicy {
    static POLICY: OnceLock<IssuerPolicy> = OnceLock::new();
    POLICY.get_or_init(|| IssuerPolicy {
        issuer: Arc::from(ISSUER),
        audiences: vec!["orders".into(), "api".into()],
        algorithms: vec![Algorithm::ES256, Algorithm::RS256],
        typ: Some(vec!["at+jwt".into()]),
        leeway: Duration::from_secs(30),
        max_lifetime: Some(Duration::from_secs(3600)),
        required_claims: vec!["sub".into()],
        scope_claims: vec!["scope".into(), "scp".into()],
        forward_token: false,
        cert_binding: CertBinding::IfPresent,
        dpop: DpopMode::Allow,
        dpop_window: Duration::from_secs(60),
        issuer_header: HeaderValue::from_static(ISSUER),
        tag: 0,
    })
}

/// `b64(header).b64(claims).b64(ES256 signature)`.
pub fn sign(header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig =
        jsonwebtoken::crypto::sign(input.as_bytes(), signing_key(), Algorithm::ES256).unwrap();
    format!("{input}.{sig}")
}

/// The header of a well-formed proof.
pub fn proof_header() -> String {
    format!(
        r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{}}}"#,
        public_jwk()
    )
}

/// The claims of a proof that passes every check.
pub fn proof_claims() -> String {
    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(ACCESS_TOKEN.as_bytes()));
    format!(
        r#"{{"htm":"{METHOD}","htu":"https://{AUTHORITY}{PATH}","iat":{NOW},"jti":"j-1","ath":"{ath}"}}"#
    )
}

pub fn run(data: &[u8]) {
    let Some((mode, rest)) = crate::mode(data) else {
        return;
    };
    match mode % 6 {
        0 => bearer(&String::from_utf8_lossy(rest)),
        1 => proof(&String::from_utf8_lossy(rest)),
        2 => proof(&sign(proof_header().as_bytes(), rest)),
        3 => proof(&sign(rest, proof_claims().as_bytes())),
        4 => access_token(rest),
        _ => {
            let _ = KeySet::from_jwks(rest);
            let _ = jwks::max_age(&String::from_utf8_lossy(rest));
        }
    }
}

fn bearer(text: &str) {
    let max = 8 * 1024;
    let Ok(jws) = token::split(text, max) else {
        assert!(verify::decode(text, max).is_err());
        return;
    };
    assert_eq!(
        format!("{}.{}.{}", jws.header, jws.claims, jws.signature),
        text,
        "segments do not rebuild the token"
    );
    assert_eq!(jws.signing_input, format!("{}.{}", jws.header, jws.claims));
    if let Ok(h) = token::header_json(&jws) {
        let _ = token::header(&h);
    }
    if let Ok(c) = token::claims_json(&jws) {
        let _ = token::ClaimsView::parse(&c);
    }
    let Ok(decoded) = verify::decode(text, max) else {
        return;
    };
    let Ok(u) = decoded.read() else {
        return;
    };
    let _ = u.header.typ_is("at+jwt");
    let _ = verify::check_header(&u.header, policy());
    let _ = verify::check_claims(&u.claims, policy(), now());
    let _ = verify::scopes(&u.claims, &policy().scope_claims);
    let _ = verify::select_issuer(&u.claims, std::iter::once(policy()));
    for name in ["exp", "nbf", "iat"] {
        let _ = u.claims.numeric_date(name);
    }
    // The signature is not ours: verification must refuse, not panic.
    if let Ok(alg) = verify::check_header(&u.header, policy()) {
        let _ = verify::verify(&u, alg, policy(), 0, keys(), now());
    }
}

fn proof(text: &str) {
    let algs = [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA];
    let Ok(p) = dpop::verify_proof(text, &request(), &algs, Duration::from_secs(60), now()) else {
        return;
    };
    assert_eq!(p.jkt, expected_jkt(), "a verified proof names another key");
    let _ = dpop::check_binding(&p, &expected_jkt());
}

fn access_token(claims: &[u8]) {
    let header = br#"{"alg":"ES256","typ":"at+jwt","kid":"k1"}"#;
    let text = sign(header, claims);
    let Ok(decoded) = verify::decode(&text, 64 * 1024) else {
        return;
    };
    let Ok(u) = decoded.read() else {
        return;
    };
    let Ok(alg) = verify::check_header(&u.header, policy()) else {
        panic!("fixed header refused");
    };
    if let Ok(v) = verify::verify(&u, alg, policy(), 0, keys(), now()) {
        let _ = ztgate_jwt::cnf::check(CertBinding::Require, v.cnf_x5t.as_deref(), None);
    }
}

/// Writes `corpus/jwt/*`: `cargo test --lib -- --ignored write_jwt_seeds`.
/// Signed seeds use the harness key, so they are valid for the harness and
/// nothing else.
#[cfg(test)]
mod seeds {
    use super::*;

    fn put(name: &str, mode: u8, body: &[u8]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/jwt");
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = vec![mode];
        bytes.extend_from_slice(body);
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }

    fn access_claims() -> String {
        format!(
            r#"{{"iss":"{ISSUER}","sub":"alice","aud":["orders"],"exp":{},"iat":{NOW},"scope":"orders:read orders:write","cnf":{{"jkt":"{}"}}}}"#,
            NOW + 600,
            expected_jkt()
        )
    }

    #[test]
    #[ignore = "writes the seed corpus"]
    fn write_jwt_seeds() {
        let token = sign(
            br#"{"alg":"ES256","typ":"at+jwt","kid":"k1"}"#,
            access_claims().as_bytes(),
        );
        put("bearer-valid", 0, token.as_bytes());
        put(
            "bearer-alg-none",
            0,
            b"eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
        );
        put(
            "proof-valid",
            1,
            sign(proof_header().as_bytes(), proof_claims().as_bytes()).as_bytes(),
        );
        put("proof-claims", 2, proof_claims().as_bytes());
        put("proof-header", 3, proof_header().as_bytes());
        put("access-claims", 4, access_claims().as_bytes());
        let jwks = format!(
            r#"{{"keys":[{},{{"kty":"RSA","n":"AQAB","e":"AQAB"}},{{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}]}}"#,
            public_jwk()
        );
        put("jwks", 5, jwks.as_bytes());
        put("cache-control", 5, b"public, max-age=300, must-revalidate");
    }

    /// The seeds pass the checks the harness is meant to get past.
    #[test]
    fn signed_seeds_verify() {
        let algs = [Algorithm::ES256];
        let proof = sign(proof_header().as_bytes(), proof_claims().as_bytes());
        let p =
            dpop::verify_proof(&proof, &request(), &algs, Duration::from_secs(60), now()).unwrap();
        assert_eq!(p.jkt, expected_jkt());
        let token = sign(
            br#"{"alg":"ES256","typ":"at+jwt","kid":"k1"}"#,
            access_claims().as_bytes(),
        );
        let decoded = verify::decode(&token, 8192).unwrap();
        let u = decoded.read().unwrap();
        let alg = verify::check_header(&u.header, policy()).unwrap();
        verify::verify(&u, alg, policy(), 0, keys(), now()).unwrap();
    }
}
