//! Key fetching against a real HTTP IdP on loopback: discovery, rotation
//! with single-flight refetch, outages before and after the first fetch.

// Helpers outside #[test] fns build fixtures and may panic.
#![allow(clippy::unwrap_used)]

mod support;
use ztgate_filter::Filter;

use std::sync::Arc;

use serde_json::json;
use support::*;
use ztgate_filter::{GrpcCode, Reason};

#[tokio::test]
async fn rotation_refetches_exactly_once_for_a_storm() {
    let old = TestKey::es256("k-old");
    let new = TestKey::rs256("k-new");
    let idp = idp_with(&[&old]).await;
    let f = Arc::new(build(&discovery_yaml(&idp, "")));
    f.start().await;
    assert_eq!(idp.jwks_fetches(), 1);
    // The IdP rotates; tokens with the new kid start arriving, 200 at once,
    // while the JWKS answer is slow so they all pile up on one fetch.
    idp.set_jwks(&jwks(&[&old, &new]));
    idp.set_jwks_delay(std::time::Duration::from_millis(200));
    let tok = sign(&new, &claims(&idp.issuer, now()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let f = f.clone();
        // Distinct tokens so the verified-token cache does not hide the fetches.
        let mut c = claims(&idp.issuer, now());
        c["jti"] = json!(i);
        let t = sign(&new, &c);
        tasks.spawn(async move { Req::bearer(&t).reason(&f).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), None);
    }
    assert_eq!(idp.jwks_fetches(), 2, "one refetch for the whole storm");
    assert_eq!(Req::bearer(&tok).reason(&f).await, None);

    // A storm of forged kids inside the interval costs the IdP nothing more.
    let forged = TestKey::es256("forged");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let f = f.clone();
        let mut c = claims(&idp.issuer, now());
        c["jti"] = json!(i);
        let t = sign(&forged, &c);
        tasks.spawn(async move { Req::bearer(&t).reason(&f).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), Some(Reason::TokenKeyUnknown));
    }
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test]
async fn unreachable_idp_with_nothing_cached_is_unavailable() {
    // Bind and drop: nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let iss = format!("http://127.0.0.1:{port}");
    let f = build(&format!(
        "issuers:\n  - issuer: {iss}\n    discovery: true\n    allow_insecure_http: true\n    audiences: [orders]\n    algorithms: [ES256]\n    http_timeout: 1s\n"
    ));
    let started = f.start().await;
    assert!(started[0].1.is_err());
    assert!(!f.ready());
    let key = TestKey::es256("k");
    let (d, _) = Req::bearer(&sign(&key, &claims(&iss, now()))).run(&f).await;
    match d {
        ztgate_filter::Decision::Deny(d) => {
            assert_eq!(d.reason, Reason::JwksUnavailable);
            assert_eq!(d.reason.grpc_code(), GrpcCode::Unavailable);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn idp_down_after_a_good_fetch_keeps_keys() {
    let key = TestKey::es256("k");
    let idp = idp_with(&[&key]).await;
    let f = build(&discovery_yaml(&idp, ""));
    f.start().await;
    idp.set_down(true);
    let store = f.stores().next().unwrap().clone();
    assert!(store.refresh().await.is_err(), "refresh fails while down");
    assert!(f.ready(), "last good keys kept");
    for i in 0..20 {
        let mut c = claims(&idp.issuer, now());
        c["jti"] = json!(i);
        assert_eq!(Req::bearer(&sign(&key, &c)).reason(&f).await, None);
    }
}

#[tokio::test]
async fn idp_recovering_serves_requests_without_waiting_for_the_loop() {
    let key = TestKey::es256("k");
    let idp = idp_with(&[&key]).await;
    idp.set_down(true);
    let f = build(&discovery_yaml(
        &idp,
        "    unknown_kid_refetch_interval: 1ms\n",
    ));
    assert!(f.start().await[0].1.is_err());
    let tok = sign(&key, &claims(&idp.issuer, now()));
    assert_eq!(
        Req::bearer(&tok).reason(&f).await,
        Some(Reason::JwksUnavailable)
    );
    idp.set_down(false);
    // Let the 1 ms refetch interval expire: the interval is what is under
    // test (the next request may fetch again at once), not a wait for an
    // event.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(Req::bearer(&tok).reason(&f).await, None);
    assert!(f.ready());
}

#[tokio::test]
async fn discovery_issuer_must_match_exactly() {
    let key = TestKey::es256("k");
    let idp = idp_with(&[&key]).await;
    idp.advertise_issuer(Some(format!("{}/", idp.issuer)));
    let f = build(&discovery_yaml(&idp, ""));
    let r = f.start().await;
    assert!(
        matches!(r[0].1, Err(ztgate_jwt::FetchError::IssuerMismatch)),
        "{r:?}"
    );
    assert!(!f.ready());
    assert_eq!(idp.jwks_fetches(), 0);
}

#[tokio::test]
async fn explicit_jwks_uri_and_static_keys_file() {
    let key = TestKey::es256("k");
    let idp = idp_with(&[&key]).await;
    let f = build(&format!(
        "issuers:\n  - issuer: https://idp.example\n    jwks_uri: {}/jwks\n    allow_insecure_http: true\n    audiences: [orders]\n",
        idp.issuer
    ));
    f.start().await;
    assert_eq!(idp.discovery_fetches(), 0);
    assert_eq!(
        Req::bearer(&sign(&key, &claims("https://idp.example", now())))
            .reason(&f)
            .await,
        None
    );

    let dir = std::env::temp_dir().join(format!("ztgate-jwt-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, json!({"keys": [key.jwk]}).to_string()).unwrap();
    let f = build(&format!(
        "issuers:\n  - issuer: https://static.example\n    keys_file: {}\n    audiences: [orders]\n",
        file.display()
    ));
    assert!(f.ready(), "static keys are ready without start()");
    assert_eq!(
        Req::bearer(&sign(&key, &claims("https://static.example", now())))
            .reason(&f)
            .await,
        None
    );
}

#[tokio::test]
async fn refresh_loop_picks_up_new_keys() {
    let a = TestKey::es256("a");
    let b = TestKey::es256("b");
    let idp = idp_with(&[&a]).await;
    let f = build(&discovery_yaml(
        &idp,
        "    jwks_refresh: {min: 1s, max: 1s}\n",
    ));
    f.start().await;
    idp.set_jwks(&jwks(&[&b]));
    let mut bg = f.background();
    let task = tokio::spawn(bg.remove(0));
    let store = f.stores().next().unwrap().clone();
    let ok = eventually(std::time::Duration::from_secs(4), async || {
        store.keys().unwrap().contains_kid("b")
    })
    .await;
    task.abort();
    assert!(ok, "background refresh swapped in the new JWKS");
    assert!(!store.keys().unwrap().contains_kid("a"));
}
