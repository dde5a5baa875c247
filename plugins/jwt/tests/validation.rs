//! The attack matrix: each case asserts the exact reason (and so the exact
//! gRPC status through the one `Reason` mapping).

// Helpers outside #[test] fns build fixtures and may panic.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use support::*;
use ztgate_filter::{Decision, GrpcCode, Reason};

async fn setup() -> (Idp, TestKey, TestKey, ztgate_jwt::JwtFilter) {
    let ec = TestKey::es256("ec-1");
    let rsa = TestKey::rs256("rsa-1");
    let idp = idp_with(&[&ec, &rsa]).await;
    let f = build(&discovery_yaml(
        &idp,
        "    typ: [at+jwt]\n    required_claims: [client_id]\n    scope_claims: [scope, scp]\n",
    ));
    let started = f.start().await;
    assert!(started.iter().all(|(_, r)| r.is_ok()), "{started:?}");
    assert!(f.ready());
    (idp, ec, rsa, f)
}

#[tokio::test]
async fn valid_es256_and_rs256_tokens_pass_and_fill_facts() {
    let (idp, ec, rsa, f) = setup().await;
    for key in [&ec, &rsa] {
        let (d, facts) = Req::bearer(&sign(key, &claims(&idp.issuer, now())))
            .run(&f)
            .await;
        assert_eq!(d, Decision::Continue);
        let tok = facts.token().unwrap();
        assert_eq!(tok.subject(), Some("alice"));
        assert_eq!(tok.scopes(), vec!["orders.read", "orders.write"]);
        assert_eq!(&**tok.issuer(), idp.issuer);
        let h = |n: &str| {
            facts
                .upstream_headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(h("x-ztgate-subject").as_deref(), Some("alice"));
        assert_eq!(h("x-ztgate-issuer"), Some(idp.issuer.clone()));
        assert_eq!(
            h("x-ztgate-scopes").as_deref(),
            Some("orders.read orders.write")
        );
        assert!(facts.strip_headers.iter().any(|h| h == "authorization"));
    }
}

#[tokio::test]
async fn scope_array_claim_is_normalised() {
    let (idp, ec, _, f) = setup().await;
    let mut c = claims(&idp.issuer, now());
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["b", "a", "b"]);
    let (_, facts) = Req::bearer(&sign(&ec, &c)).run(&f).await;
    assert_eq!(facts.token().unwrap().scopes(), vec!["a", "b"]);
}

#[tokio::test]
async fn time_rules_with_leeway() {
    let (idp, ec, _, f) = setup().await;
    let t = now();
    let mut c = claims(&idp.issuer, t);
    c["exp"] = json!(secs(t) - 60);
    assert_eq!(
        Req::bearer(&sign(&ec, &c)).reason(&f).await,
        Some(Reason::TokenExpired)
    );
    c["exp"] = json!(secs(t) - 10); // inside the 30 s leeway
    c["iat"] = json!(secs(t) - 100);
    assert_eq!(Req::bearer(&sign(&ec, &c)).reason(&f).await, None);
    let mut c = claims(&idp.issuer, t);
    c["nbf"] = json!(secs(t) + 120);
    assert_eq!(
        Req::bearer(&sign(&ec, &c)).reason(&f).await,
        Some(Reason::TokenNotYetValid)
    );
    let mut c = claims(&idp.issuer, t);
    c["iat"] = json!(secs(t) + 120);
    assert_eq!(
        Req::bearer(&sign(&ec, &c)).reason(&f).await,
        Some(Reason::TokenNotYetValid)
    );
    let mut c = claims(&idp.issuer, t);
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        Req::bearer(&sign(&ec, &c)).reason(&f).await,
        Some(Reason::TokenClaimMissing)
    );
}

#[tokio::test]
async fn audience_and_required_claims() {
    let (idp, ec, _, f) = setup().await;
    let mut c = claims(&idp.issuer, now());
    c["aud"] = json!("billing");
    assert_eq!(
        Req::bearer(&sign(&ec, &c)).reason(&f).await,
        Some(Reason::TokenAudienceMismatch)
    );
    c["aud"] = json!(["billing", "orders"]);
    assert_eq!(Req::bearer(&sign(&ec, &c)).reason(&f).await, None);
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        Req::bearer(&sign(&ec, &c)).reason(&f).await,
        Some(Reason::TokenAudienceMismatch)
    );
    let mut c = claims(&idp.issuer, now());
    c.as_object_mut().unwrap().remove("client_id");
    assert_eq!(
        Req::bearer(&sign(&ec, &c)).reason(&f).await,
        Some(Reason::TokenClaimMissing)
    );
}

#[tokio::test]
async fn unknown_or_wrong_issuer_is_refused_without_any_fetch() {
    let (idp, ec, _, f) = setup().await;
    let before = (idp.jwks_fetches(), idp.discovery_fetches());
    for iss in ["https://evil.example", "http://127.0.0.1:1", ""] {
        let mut c = claims(&idp.issuer, now());
        c["iss"] = json!(iss);
        let t = sign_raw(
            &json!({"alg": "ES256", "typ": "at+jwt", "kid": "never-seen"}),
            &c,
            &ec.enc,
            Algorithm::ES256,
        );
        assert_eq!(
            Req::bearer(&t).reason(&f).await,
            Some(Reason::TokenIssuerUnknown)
        );
    }
    let mut c = claims(&idp.issuer, now());
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        Req::bearer(&sign(&ec, &c)).reason(&f).await,
        Some(Reason::TokenIssuerUnknown)
    );
    assert_eq!(before, (idp.jwks_fetches(), idp.discovery_fetches()));
}

#[tokio::test]
async fn alg_none_and_hmac_key_confusion_are_refused() {
    let (idp, _, rsa, f) = setup().await;
    let c = claims(&idp.issuer, now());
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "at+jwt"})
            .to_string()
            .as_bytes()),
        b64(c.to_string().as_bytes())
    );
    assert_eq!(
        Req::bearer(&none).reason(&f).await,
        Some(Reason::TokenAlgorithmNotAllowed)
    );
    // HS256 "signed" with the issuer's RSA public key as the HMAC secret.
    let secret = EncodingKey::from_secret(rsa.public_pem.as_ref().unwrap().as_bytes());
    let forged = sign_raw(
        &json!({"alg": "HS256", "typ": "at+jwt", "kid": "rsa-1"}),
        &c,
        &secret,
        Algorithm::HS256,
    );
    assert_eq!(
        Req::bearer(&forged).reason(&f).await,
        Some(Reason::TokenAlgorithmNotAllowed)
    );
    // The RSA key may not verify an ES256 token even if the kid points at it.
    let ec2 = TestKey::es256("x");
    let mixed = sign_raw(
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": "rsa-1"}),
        &c,
        &ec2.enc,
        Algorithm::ES256,
    );
    assert_eq!(
        Req::bearer(&mixed).reason(&f).await,
        Some(Reason::TokenAlgorithmNotAllowed)
    );
}

#[tokio::test]
async fn typ_crit_and_embedded_keys() {
    let (idp, ec, _, f) = setup().await;
    let c = claims(&idp.issuer, now());
    // An ID token (typ JWT) replayed where at+jwt is required.
    let id_token = sign_raw(
        &json!({"alg": "ES256", "typ": "JWT", "kid": "ec-1"}),
        &c,
        &ec.enc,
        Algorithm::ES256,
    );
    assert_eq!(
        Req::bearer(&id_token).reason(&f).await,
        Some(Reason::TokenTypeInvalid)
    );
    let app = sign_raw(
        &json!({"alg": "ES256", "typ": "application/at+jwt", "kid": "ec-1"}),
        &c,
        &ec.enc,
        Algorithm::ES256,
    );
    assert_eq!(Req::bearer(&app).reason(&f).await, None);
    let crit = sign_raw(
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": "ec-1", "crit": ["exp"], "exp": 1}),
        &c,
        &ec.enc,
        Algorithm::ES256,
    );
    assert_eq!(
        Req::bearer(&crit).reason(&f).await,
        Some(Reason::TokenCritUnsupported)
    );
    // The attacker's own key, offered through jku / x5u / jwk, is never used.
    let evil = TestKey::es256("ec-1");
    let jku = sign_raw(
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": "ec-1", "jku": "https://evil.example/jwks",
                "x5u": "https://evil.example/cert", "jwk": evil.jwk}),
        &c,
        &evil.enc,
        Algorithm::ES256,
    );
    assert_eq!(
        Req::bearer(&jku).reason(&f).await,
        Some(Reason::TokenSignatureInvalid)
    );
}

#[tokio::test]
async fn malformed_tokens() {
    let (idp, ec, _, f) = setup().await;
    let good = sign(&ec, &claims(&idp.issuer, now()));
    let (h, rest) = good.split_once('.').unwrap();
    let (_, s) = rest.split_once('.').unwrap();
    let array_claims = format!("{h}.{}.{s}", b64(b"[1,2]"));
    let cases = [
        "abc".to_owned(),
        format!("{h}.{s}"),
        format!("{h}.!!!.{s}"),
        array_claims,
        format!("{}.{}", good, "x"),
        format!("{h}.{}.{s}", b64(b"{\"iss\":")),
        good.replacen('.', ".=", 1),
    ];
    for t in &cases {
        assert_eq!(
            Req::bearer(t).reason(&f).await,
            Some(Reason::TokenMalformed),
            "{t}"
        );
    }
    let big = format!("{good}{}", "A".repeat(64 * 1024));
    let (d, _) = Req::bearer(&big).run(&f).await;
    match d {
        Decision::Deny(d) => {
            assert_eq!(d.reason, Reason::TokenTooLarge);
            assert_eq!(d.reason.grpc_code(), GrpcCode::Unauthenticated);
            assert!(
                !d.message.contains(&good[..20]),
                "message must not echo the token"
            );
        }
        other => panic!("{other:?}"),
    }
    // Signature bytes flipped. Change the signature's first character: every
    // bit of it is significant, whereas the last character of a 64-byte ES256
    // signature carries two padding bits, and a non-zero padding bit makes the
    // base64url itself invalid (malformed, not a bad signature).
    let sig_start = good.rfind('.').unwrap() + 1;
    let first = &good[sig_start..=sig_start];
    let bad = format!(
        "{}{}{}",
        &good[..sig_start],
        if first == "A" { "B" } else { "A" },
        &good[sig_start + 1..]
    );
    assert_eq!(
        Req::bearer(&bad).reason(&f).await,
        Some(Reason::TokenSignatureInvalid)
    );
}

#[tokio::test]
async fn missing_token_and_schemes() {
    let (idp, ec, _, f) = setup().await;
    let t = sign(&ec, &claims(&idp.issuer, now()));
    assert_eq!(
        Req::with_auth("Basic dXNlcjpwYXNz").reason(&f).await,
        Some(Reason::TokenMissing)
    );
    assert_eq!(
        Req::with_auth("Bearer ").reason(&f).await,
        Some(Reason::TokenMissing)
    );
    assert_eq!(
        Req::with_auth(&format!("bEaReR {t}")).reason(&f).await,
        None
    );
    let mut r = Req::bearer(&t);
    r.headers.remove("authorization");
    assert_eq!(r.reason(&f).await, Some(Reason::TokenMissing));
    let optional = build(&format!("required: false\n{}", discovery_yaml(&idp, "")));
    optional.start().await;
    let (d, facts) = r.run(&optional).await;
    assert_eq!(d, Decision::Continue);
    assert!(facts.token().is_none());
}

#[tokio::test]
async fn max_lifetime_and_forward_token() {
    let ec = TestKey::es256("ec-1");
    let idp = idp_with(&[&ec]).await;
    let f = build(&discovery_yaml(
        &idp,
        "    max_lifetime: 5m\n    forward_token: true\n",
    ));
    f.start().await;
    let t = now();
    let c = claims(&idp.issuer, t); // 10 minutes
    assert_eq!(
        Req::bearer(&sign(&ec, &c)).reason(&f).await,
        Some(Reason::TokenLifetimeExceeded)
    );
    let mut c = claims(&idp.issuer, t);
    c["exp"] = json!(secs(t) + 120);
    let (d, facts) = Req::bearer(&sign(&ec, &c)).run(&f).await;
    assert_eq!(d, Decision::Continue);
    assert!(
        facts.strip_headers.is_empty(),
        "forward_token keeps authorization"
    );
}

#[tokio::test]
async fn cache_hit_never_outlives_exp() {
    let ec = TestKey::es256("ec-1");
    let idp = idp_with(&[&ec]).await;
    let f = build(&discovery_yaml(&idp, "    leeway: 0s\n"));
    f.start().await;
    let t0 = now();
    let mut c = claims(&idp.issuer, t0);
    c["exp"] = json!(secs(t0) + 100);
    let tok = sign(&ec, &c);
    assert_eq!(Req::bearer(&tok).at(t0).reason(&f).await, None);
    assert_eq!(f.cached_tokens(), 1);
    // IdP gone: a hit needs no key at all.
    idp.set_down(true);
    assert_eq!(
        Req::bearer(&tok)
            .at(t0 + Duration::from_secs(50))
            .reason(&f)
            .await,
        None
    );
    assert_eq!(
        Req::bearer(&tok)
            .at(t0 + Duration::from_secs(101))
            .reason(&f)
            .await,
        Some(Reason::TokenExpired)
    );
    assert_eq!(f.cached_tokens(), 0, "expired entry dropped");
}
