//! Per-request binding checks: RFC 8705 certificate-bound tokens and
//! RFC 9449 DPoP proofs, with real keys and real client certificates.

// Helpers outside #[test] fns build fixtures and may panic.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use support::*;
use ztgate_filter::{PeerCertificate, Reason};
use ztgate_jwt::JwtFilter;

fn client_cert(cn: &str) -> Arc<PeerCertificate> {
    let mut p = rcgen::CertificateParams::new(vec![format!("{cn}.local")]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Arc::new(PeerCertificate::from_der(cert.der()).unwrap())
}

async fn filter(extra: &str) -> (Idp, TestKey, JwtFilter) {
    let key = TestKey::es256("k");
    let idp = idp_with(&[&key]).await;
    let f = build(&discovery_yaml(&idp, extra));
    f.start().await;
    (idp, key, f)
}

#[tokio::test]
async fn cert_bound_token_needs_the_same_cert() {
    let (idp, key, f) = filter("").await;
    let alice = client_cert("alice");
    let mallory = client_cert("mallory");
    let mut c = claims(&idp.issuer, now());
    c["cnf"] = json!({"x5t#S256": alice.thumbprint_b64url()});
    let tok = sign(&key, &c);
    let mut r = Req::bearer(&tok);
    r.tls.peer = Some(alice.clone());
    assert_eq!(r.reason(&f).await, None);
    // Cached now: the binding still runs per request.
    r.tls.peer = Some(mallory);
    assert_eq!(r.reason(&f).await, Some(Reason::TokenCertBindingMismatch));
    r.tls.peer = None;
    assert_eq!(r.reason(&f).await, Some(Reason::TokenCertBindingMismatch));
    // if_present: an unbound token is fine without a cert.
    assert_eq!(
        Req::bearer(&sign(&key, &claims(&idp.issuer, now())))
            .reason(&f)
            .await,
        None
    );
}

#[tokio::test]
async fn cert_binding_require_and_off() {
    let (idp, key, f) = filter("    cert_binding: require\n").await;
    let mut r = Req::bearer(&sign(&key, &claims(&idp.issuer, now())));
    r.tls.peer = Some(client_cert("alice"));
    assert_eq!(r.reason(&f).await, Some(Reason::TokenCertBindingMissing));

    let (idp, key, f) = filter("    cert_binding: off\n").await;
    let mut c = claims(&idp.issuer, now());
    c["cnf"] = json!({"x5t#S256": client_cert("alice").thumbprint_b64url()});
    assert_eq!(Req::bearer(&sign(&key, &c)).reason(&f).await, None);
}

/// A DPoP client: its own P-256 key and the proofs it makes.
struct DpopClient {
    key: TestKey,
}

impl DpopClient {
    fn new() -> Self {
        Self {
            key: TestKey::es256("unused"),
        }
    }

    fn public_jwk(&self) -> Value {
        json!({"kty": "EC", "crv": "P-256", "x": self.key.jwk["x"], "y": self.key.jwk["y"]})
    }

    fn jkt(&self) -> String {
        ec_thumbprint(&self.key.jwk)
    }

    fn proof_with(&self, claims: Value, header: Value) -> String {
        sign_raw(&header, &claims, &self.key.enc, Algorithm::ES256)
    }

    fn claims(&self, token: &str, jti: &str) -> Value {
        json!({"htm": "POST", "htu": "https://api.example/orders.v1.Orders/Get",
               "iat": secs(now()), "jti": jti, "ath": ath(token)})
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public_jwk()})
    }

    fn proof(&self, token: &str, jti: &str) -> String {
        self.proof_with(self.claims(token, jti), self.header())
    }
}

fn dpop_req(token: &str, proof: &str) -> Req {
    let mut r = Req::with_auth(&format!("DPoP {token}"));
    r.headers
        .insert("dpop", HeaderValue::from_str(proof).unwrap());
    r
}

#[tokio::test]
async fn dpop_good_replay_and_downgrade() {
    let (idp, key, f) = filter("    dpop: allow\n").await;
    let client = DpopClient::new();
    let mut c = claims(&idp.issuer, now());
    c["cnf"] = json!({"jkt": client.jkt()});
    let tok = sign(&key, &c);

    let proof = client.proof(&tok, "p1");
    let (d, facts) = dpop_req(&tok, &proof).run(&f).await;
    assert_eq!(d, ztgate_filter::Decision::Continue);
    assert!(facts.strip_headers.iter().any(|h| h == "dpop"));
    assert_eq!(
        dpop_req(&tok, &proof).reason(&f).await,
        Some(Reason::DpopReplay)
    );
    assert_eq!(
        dpop_req(&tok, &client.proof(&tok, "p2")).reason(&f).await,
        None
    );
    // The bound token presented as a plain bearer token.
    assert_eq!(
        Req::bearer(&tok).reason(&f).await,
        Some(Reason::DpopProofMissing)
    );
    // DPoP scheme without the proof header.
    assert_eq!(
        Req::with_auth(&format!("DPoP {tok}")).reason(&f).await,
        Some(Reason::DpopProofMissing)
    );
    // allow: an unbound bearer token still works.
    assert_eq!(
        Req::bearer(&sign(&key, &claims(&idp.issuer, now())))
            .reason(&f)
            .await,
        None
    );
}

#[tokio::test]
async fn dpop_proof_must_match_the_request_and_token() {
    let (idp, key, f) = filter("    dpop: require\n").await;
    let client = DpopClient::new();
    let mut c = claims(&idp.issuer, now());
    c["cnf"] = json!({"jkt": client.jkt()});
    let tok = sign(&key, &c);

    let with = |edit: &dyn Fn(&mut Value)| {
        let mut cl = client.claims(&tok, &format!("j-{}", rand_suffix()));
        edit(&mut cl);
        client.proof_with(cl, client.header())
    };
    let cases: Vec<(&str, String, Reason)> = vec![
        (
            "wrong htu",
            with(&|c| c["htu"] = json!("https://api.example/orders.v1.Orders/Delete")),
            Reason::DpopProofInvalid,
        ),
        (
            "other host",
            with(&|c| c["htu"] = json!("https://evil.example/orders.v1.Orders/Get")),
            Reason::DpopProofInvalid,
        ),
        (
            "wrong htm",
            with(&|c| c["htm"] = json!("GET")),
            Reason::DpopProofInvalid,
        ),
        (
            "missing ath",
            with(&|c| {
                c.as_object_mut().unwrap().remove("ath");
            }),
            Reason::DpopProofInvalid,
        ),
        (
            "wrong ath",
            with(&|c| c["ath"] = json!(ath("another-token"))),
            Reason::DpopProofInvalid,
        ),
        (
            "stale iat",
            with(&|c| c["iat"] = json!(secs(now()) - 600)),
            Reason::DpopProofInvalid,
        ),
        (
            "no jti",
            with(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            Reason::DpopProofInvalid,
        ),
    ];
    for (name, proof, want) in cases {
        assert_eq!(
            dpop_req(&tok, &proof).reason(&f).await,
            Some(want),
            "{name}"
        );
    }
    // Header rules: typ, private key in jwk, no jwk.
    let cl = client.claims(&tok, "h1");
    let mut h = client.header();
    h["typ"] = json!("JWT");
    assert_eq!(
        dpop_req(&tok, &client.proof_with(cl.clone(), h))
            .reason(&f)
            .await,
        Some(Reason::DpopProofInvalid)
    );
    let mut h = client.header();
    h["jwk"]["d"] = json!("c2VjcmV0");
    assert_eq!(
        dpop_req(&tok, &client.proof_with(cl.clone(), h))
            .reason(&f)
            .await,
        Some(Reason::DpopProofInvalid)
    );
    let mut h = client.header();
    h.as_object_mut().unwrap().remove("jwk");
    assert_eq!(
        dpop_req(&tok, &client.proof_with(cl, h)).reason(&f).await,
        Some(Reason::DpopProofInvalid)
    );

    // A valid proof by another key: the token is bound to the first client.
    let thief = DpopClient::new();
    assert_eq!(
        dpop_req(&tok, &thief.proof(&tok, "t1")).reason(&f).await,
        Some(Reason::DpopBindingMismatch)
    );
    // require: an unbound token over Bearer is refused.
    assert_eq!(
        Req::bearer(&sign(&key, &claims(&idp.issuer, now())))
            .reason(&f)
            .await,
        Some(Reason::DpopProofMissing)
    );
    // Proof accepted once the window allows it, and iat slightly ahead is fine.
    let ok = with(&|c| c["iat"] = json!(secs(now()) + 5));
    assert_eq!(
        dpop_req(&tok, &ok)
            .at(now() + Duration::from_secs(1))
            .reason(&f)
            .await,
        None
    );
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn dpop_off_refuses_bound_tokens() {
    let (idp, key, f) = filter("").await;
    let client = DpopClient::new();
    let mut c = claims(&idp.issuer, now());
    c["cnf"] = json!({"jkt": client.jkt()});
    let tok = sign(&key, &c);
    assert_eq!(
        Req::bearer(&tok).reason(&f).await,
        Some(Reason::DpopProofMissing)
    );
    assert_eq!(
        dpop_req(&tok, &client.proof(&tok, "x")).reason(&f).await,
        Some(Reason::DpopProofInvalid)
    );
}
