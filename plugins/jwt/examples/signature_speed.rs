//! Side by side, in one run: verifying one JWS signature with OpenSSL and
//! the key parsed once, with `jsonwebtoken::crypto::verify` and a
//! `DecodingKey` (ring: the public key is rebuilt on every call), and with
//! what the `jwt` filter uses (the faster per key type), for RS256 and
//! ES256.
//!
//! Run: `cargo run --release -p ztgate-jwt --example signature_speed`.
//! Alternates them five times and prints the median µs per verify. For
//! instruction counts: `ONLY=RS256 valgrind --tool=callgrind
//! target/release/examples/signature_speed`, then `callgrind_annotate
//! --inclusive=yes` (each variant runs 10 000 verifies).

// Example set-up may panic on a broken fixture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::json;

const N: u32 = 2_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let data =
        b"eyJhbGciOiJSUzI1NiIsImtpZCI6ImEifQ.eyJzdWIiOiJhbGljZSIsInNjb3BlIjoib3JkZXJzOnJlYWQifQ";

    let rsa = Rsa::generate(2048).unwrap();
    let (n, e) = (b64(&rsa.n().to_vec()), b64(&rsa.e().to_vec()));
    let rsa_pem = PKey::from_rsa(rsa)
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let ec = EcKey::generate(&group).unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let (mut x, mut y) = (
        openssl::bn::BigNum::new().unwrap(),
        openssl::bn::BigNum::new().unwrap(),
    );
    ec.public_key()
        .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
        .unwrap();
    let (x, y) = (
        b64(&x.to_vec_padded(32).unwrap()),
        b64(&y.to_vec_padded(32).unwrap()),
    );
    let ec_pem = PKey::from_ec_key(ec)
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();

    let cases = [
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&rsa_pem).unwrap(),
            json!({"kty": "RSA", "n": n, "e": e}),
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&ec_pem).unwrap(),
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
        ),
    ];
    // `ONLY=RS256` (or ES256) runs one algorithm: per-call instruction
    // counts under `valgrind --tool=callgrind` then read off directly.
    let only = std::env::var("ONLY").ok();
    for (alg, enc, jwk) in cases {
        if only.as_deref().is_some_and(|o| o != format!("{alg:?}")) {
            continue;
        }
        let sig_b64 = jsonwebtoken::crypto::sign(data, &enc, alg).unwrap();
        let sig = URL_SAFE_NO_PAD.decode(&sig_b64).unwrap();
        let ours = ztgate_jwt::keys::parse_jwk(jwk.as_object().unwrap()).unwrap();
        let pkey = match alg {
            // The OpenSSL key of the same JWK, built once.
            Algorithm::RS256 => {
                let rsa = Rsa::from_public_components(
                    openssl::bn::BigNum::from_slice(
                        &URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap(),
                    )
                    .unwrap(),
                    openssl::bn::BigNum::from_slice(
                        &URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap(),
                    )
                    .unwrap(),
                )
                .unwrap();
                PKey::from_rsa(rsa).unwrap()
            }
            _ => {
                let x = openssl::bn::BigNum::from_slice(
                    &URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
                )
                .unwrap();
                let y = openssl::bn::BigNum::from_slice(
                    &URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap(),
                )
                .unwrap();
                PKey::from_ec_key(
                    EcKey::from_public_key_affine_coordinates(&group, &x, &y).unwrap(),
                )
                .unwrap()
            }
        };
        let theirs = DecodingKey::from_jwk(&serde_json::from_value(jwk).unwrap()).unwrap();
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..N {
                assert!(ztgate_jwt::signature::verify_openssl(
                    alg, &pkey, data, &sig
                ));
            }
            a.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(N));
            let t = Instant::now();
            for _ in 0..N {
                assert!(ztgate_jwt::signature::verify(
                    alg, &ours.key, data, &sig, &sig_b64
                ));
            }
            c.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(N));
            let t = Instant::now();
            for _ in 0..N {
                assert!(jsonwebtoken::crypto::verify(&sig_b64, data, &theirs, alg).unwrap());
            }
            b.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(N));
        }
        let (a, b, c) = (median(a), median(b), median(c));
        println!(
            "{alg:?}: openssl (key parsed once) {a:.1} µs, jsonwebtoken/ring {b:.1} µs, \
             ztgate (the faster of the two per key type) {c:.1} µs; ztgate/ring {:.2}",
            c / b
        );
    }
}
