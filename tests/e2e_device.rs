#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The `device` filter end to end: JA4 captured in the real handshake, the
//! keyed fingerprint forwarded, spoofing stripped, GeoIP behind a trusted
//! proxy, country policy — with the real MaxMind test databases.

mod support;

use prost::Message;
use support::{assert_denied, bearer, testdata, Setup};
use ztgate_testkit::client;
use ztgate_testkit::proto::{Reply, Request};

const SECRET: &str = "device-secret-0123456789abcdef0123456789";

fn policy(extra: &str) -> String {
    format!(
        "pipeline: [sanitize, mtls, device, route]\nmtls:\n  trust_domains: [acme.test]\ndevice:\n  secret: {SECRET}\n  signals: [ja4]\n  geoip:\n    country_db: {}\n{extra}",
        testdata().join("geoip/GeoLite2-City-Test.mmdb").display()
    )
}

async fn fingerprint_via_tonic(
    env: &support::Env,
    req: tonic::Request<Request>,
) -> Result<Reply, tonic::Status> {
    // A new channel: a new TLS connection and ClientHello.
    let ch = env.web_channel().await;
    client::orders(ch).get(req).await.map(|r| r.into_inner())
}

/// One gRPC call with curl (OpenSSL client stack), returning the decoded reply.
async fn call_with_curl(env: &support::Env, extra: &[&str]) -> Reply {
    let out = support::curl_get(env, &Request::default(), extra).await;
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = out.stdout;
    assert!(
        body.len() >= 5,
        "no gRPC message from curl call: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Reply::decode(&body[5..]).unwrap()
}

#[tokio::test]
async fn ja4_fingerprint_is_stable_per_client_stack_and_forwarded() {
    let mut setup = Setup::new("device-ja4");
    let policy = policy("");
    setup.policy = &policy;
    let env = setup.start().await;

    // Same client settings, two connections: same fingerprint.
    let mut forged = tonic::Request::new(Request::default());
    forged
        .metadata_mut()
        .insert("x-device-fingerprint", "forged-value".parse().unwrap());
    let a = fingerprint_via_tonic(&env, forged).await.unwrap();
    let b = fingerprint_via_tonic(&env, tonic::Request::new(Request::default()))
        .await
        .unwrap();
    let fp_a = a.metadata.get("x-device-fingerprint").cloned().unwrap();
    let fp_b = b.metadata.get("x-device-fingerprint").cloned().unwrap();
    assert_eq!(fp_a, fp_b);
    assert_eq!(fp_a.len(), 43, "base64url of a SHA-256 HMAC");
    assert_ne!(fp_a, "forged-value");

    // Another TLS stack (curl/OpenSSL) and another cipher configuration
    // give other fingerprints; the same curl settings twice give the same.
    let c1 = call_with_curl(&env, &[]).await;
    let c2 = call_with_curl(&env, &[]).await;
    let c3 = call_with_curl(&env, &["--tls13-ciphers", "TLS_CHACHA20_POLY1305_SHA256"]).await;
    let fp = |r: &Reply| r.metadata.get("x-device-fingerprint").cloned().unwrap();
    assert_eq!(fp(&c1), fp(&c2));
    assert_ne!(fp(&c1), fp_a);
    assert_ne!(fp(&c1), fp(&c3));
    // Loopback is in no GeoIP database: no country header.
    assert!(!a.metadata.contains_key("x-ztgate-geo-country"));
}

#[tokio::test]
async fn geoip_country_behind_a_trusted_proxy_and_country_policy() {
    let mut setup = Setup::new("device-geo");
    let policy = policy("  countries:\n    deny: [BT]\n");
    setup.policy = &policy;
    setup.listener_extra = "  trusted_proxies: [127.0.0.1/32]\n";
    let env = setup.start().await;

    // 81.2.69.142 is GB in the test database (testdata/geoip/README.md).
    let mut req = tonic::Request::new(Request::default());
    req.metadata_mut()
        .insert("x-forwarded-for", "81.2.69.142".parse().unwrap());
    let r = fingerprint_via_tonic(&env, req).await.unwrap();
    assert_eq!(
        r.metadata.get("x-ztgate-geo-country").map(String::as_str),
        Some("GB")
    );

    // 67.43.156.1 is BT: denied by the country policy.
    let mut req = tonic::Request::new(Request::default());
    req.metadata_mut()
        .insert("x-forwarded-for", "67.43.156.1".parse().unwrap());
    let err = fingerprint_via_tonic(&env, req).await.unwrap_err();
    assert_denied(&err, tonic::Code::PermissionDenied, "geo_denied", None);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let mut setup = Setup::new("device-untrusted");
    let policy = policy("  countries:\n    deny: [BT]\n");
    setup.policy = &policy;
    let env = setup.start().await;
    let mut req = tonic::Request::new(Request::default());
    req.metadata_mut()
        .insert("x-forwarded-for", "67.43.156.1".parse().unwrap());
    let r = fingerprint_via_tonic(&env, req).await.unwrap();
    assert!(!r.metadata.contains_key("x-ztgate-geo-country"));
}

/// The fingerprint is remembered per connection, never past what it was
/// derived from: on one open connection, a SIGHUP that changes the secret
/// changes the fingerprint (to what a new connection gets); a replica with
/// the same secret derives the same value; `device` listed before `mtls`.
/// (A changed request signal on one connection: the device crate's unit
/// test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remembered_fingerprint_follows_secret_signals_and_replicas() {
    let mut setup = Setup::new("device-memo");
    let policy = policy("").replace(
        "pipeline: [sanitize, mtls, device, route]",
        "pipeline: [sanitize, device, mtls, route]",
    );
    setup.policy = &policy;
    let env = setup.start().await;
    let open = client::orders(env.web_channel().await);
    let fp = async |c: &mut client::OrdersClient<tonic::transport::Channel>| {
        let r = c.get(Request::default()).await.unwrap().into_inner();
        r.metadata.get("x-device-fingerprint").cloned().unwrap()
    };
    let first = fp(&mut open.clone()).await;
    assert_eq!(
        fp(&mut open.clone()).await,
        first,
        "the same connection, the same value"
    );
    let fresh = fp(&mut client::orders(env.web_channel().await)).await;
    assert_eq!(fresh, first, "a new connection derives the same value");

    // A replica with the same secret derives the same value.
    let replica = env.replica("b");
    let mut on_replica = client::orders(env.channel_to(&replica, &env.web).await);
    assert_eq!(fp(&mut on_replica).await, first);

    // Another secret, by SIGHUP: the open connection's next request is
    // fingerprinted under it, as a new connection's is.
    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    std::fs::write(
        &env.gw.config,
        text.replace(SECRET, "another-device-secret-0123456789abcdef01"),
    )
    .unwrap();
    support::sighup_reloaded(&env.gw).await;
    let rekeyed = fp(&mut open.clone()).await;
    assert_ne!(rekeyed, first, "a remembered value outlived the secret");
    let fresh = fp(&mut client::orders(env.web_channel().await)).await;
    assert_eq!(rekeyed, fresh);
    drop(replica);
}

/// Claim binding (`device.claim_binding`): a token whose claim names this
/// device's fingerprint is accepted, from the verified-token cache too; one
/// naming another device, or none, is refused `device_mismatch` — enforced
/// by the watched config file, the same after a SIGHUP and on a replica,
/// with `jwt` listed before `mtls`, and a claim renamed by the watched file
/// applies to a cached token. (The
/// token's claims are read by name only here, from the text the `jwt`
/// filter kept.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bound_to_another_device_is_refused() {
    let idp = ztgate_testkit::idp::Idp::start().await.unwrap();
    let jwt = format!(
        "jwt:\n  issuers:\n    - issuer: {}\n      discovery: true\n      allow_insecure_http: true\n      audiences: [orders]\n      algorithms: [ES256]\n",
        idp.issuer
    );
    let shadow = policy(&format!(
        "  claim_binding:\n    bind_claim: dfp\n    mode: shadow\n{jwt}"
    ))
    .replace(
        "pipeline: [sanitize, mtls, device, route]",
        "pipeline: [sanitize, jwt, mtls, device, route]",
    );
    let mut setup = Setup::new("device-claim");
    setup.policy = &shadow;
    let env = setup.start().await;
    let token = |claims: serde_json::Value| {
        idp.token("alice", "orders:read", "orders", 300, claims)
            .unwrap()
    };
    // Shadow mode lets the call through: learn this client's fingerprint.
    let fp = fingerprint_via_tonic(&env, bearer(&token(serde_json::json!({}))))
        .await
        .unwrap()
        .metadata
        .get("x-device-fingerprint")
        .cloned()
        .unwrap();
    // Enforced from here, through the watched config file alone.
    support::edit_config_reloaded(&env.gw, |y| y.replace("    mode: shadow\n", "")).await;

    let bound = token(serde_json::json!({ "dfp": fp }));
    let replica = env.replica("b");
    env.first_then_reloaded_and_replica(&replica, async |gw, when| {
        let mut c = client::orders(env.channel_to(gw, &env.web).await);
        for _ in 0..2 {
            let reply = c.get(bearer(&bound)).await;
            assert!(reply.is_ok(), "{when}: {reply:?}");
        }
        for claims in [
            serde_json::json!({ "dfp": "A".repeat(fp.len()) }),
            serde_json::json!({}),
            serde_json::json!({ "dfp": 7 }),
        ] {
            let err = c.get(bearer(&token(claims))).await.unwrap_err();
            assert_denied(&err, tonic::Code::PermissionDenied, "device_mismatch", None);
        }
    })
    .await;

    // Another claim named by the watched file: the cached token, whose
    // claims were already read by name, is read for the new name.
    support::edit_config_reloaded(&env.gw, |y| {
        y.replace("bind_claim: dfp", "bind_claim: device")
    })
    .await;
    let mut c = client::orders(env.web_channel().await);
    let err = c.get(bearer(&bound)).await.unwrap_err();
    assert_denied(&err, tonic::Code::PermissionDenied, "device_mismatch", None);
    let renamed = token(serde_json::json!({ "device": fp }));
    c.get(bearer(&renamed)).await.unwrap();
}
