#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Downstream mTLS: the handshake refuses what it must, the `mtls` filter
//! applies the X.509-SVID rules and the SPIFFE policy.

mod support;

use support::{assert_denied, Setup};
use ztgate_testkit::client::{self, Target};
use ztgate_testkit::pki::{Ca, LeafSpec};
use ztgate_testkit::proto::Request;

/// Whether a call with this target fails before reaching the backend
/// because the TLS handshake was refused.
async fn refused(t: &Target) -> bool {
    match client::connect(t).await {
        Err(_) => true,
        Ok(ch) => match client::orders(ch).get(Request::default()).await {
            Ok(_) => false,
            // The refusal arrives as a transport error (broken pipe, closed
            // connection), never as a gRPC status from the gateway or backend.
            Err(s) => {
                matches!(
                    s.code(),
                    tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
                ) && s.metadata().get("x-request-id").is_none()
                    && s.message().contains("transport error")
                        | s.message().contains("connection closed")
                        | s.message().contains("canceled")
            }
        },
    }
}

#[tokio::test]
async fn handshake_refuses_missing_foreign_and_expired_certs() {
    let env = Setup::new("handshake").start().await;
    // No client certificate with client_auth: require.
    assert!(refused(&env.target()).await);
    // A certificate from another CA.
    let other = Ca::new("acme.test").unwrap().svid(support::WEB_ID).unwrap();
    assert!(refused(&env.target().with_identity(&other.cert_pem, &other.key_pem)).await);
    // An expired certificate from the right CA.
    let expired = env.leaf(LeafSpec {
        common_name: "web".into(),
        uris: vec![support::WEB_ID.into()],
        expired: true,
        ..LeafSpec::default()
    });
    assert!(
        refused(
            &env.target()
                .with_identity(&expired.cert_pem, &expired.key_pem)
        )
        .await
    );
    // And the good one works.
    assert!(
        !refused(
            &env.target()
                .with_identity(&env.web.cert_pem, &env.web.key_pem)
        )
        .await
    );
}

#[tokio::test]
async fn spiffe_policy_and_svid_rules() {
    let env = Setup::new("spiffe").start().await;
    let call = |ch| async move { client::orders(ch).get(Request::default()).await };

    // Allowed trust domain, ID outside the allowed patterns.
    let other_ns = env.svid("spiffe://acme.test/ns/dev/sa/web");
    let err = call(env.channel_as(&other_ns).await).await.unwrap_err();
    assert_denied(
        &err,
        tonic::Code::PermissionDenied,
        "spiffe_id_not_allowed",
        None,
    );

    // Foreign trust domain (same CA).
    let foreign = env.svid("spiffe://partner.test/ns/shop/sa/web");
    let err = call(env.channel_as(&foreign).await).await.unwrap_err();
    assert_denied(
        &err,
        tonic::Code::PermissionDenied,
        "trust_domain_not_allowed",
        None,
    );

    // Two URI SANs: not an SVID.
    let two = env.leaf(LeafSpec {
        common_name: "two".into(),
        uris: vec![
            support::WEB_ID.into(),
            "spiffe://acme.test/ns/shop/sa/other".into(),
        ],
        ..LeafSpec::default()
    });
    let err = call(env.channel_as(&two).await).await.unwrap_err();
    assert_denied(
        &err,
        tonic::Code::Unauthenticated,
        "invalid_svid",
        Some("Bearer error=\"invalid_token\""),
    );

    assert_eq!(
        env.metric_reaching(
            "ztgate_requests_total",
            &[("decision", "deny"), ("grpc_status", "7")],
            2.0
        )
        .await,
        2.0
    );
    assert_eq!(
        env.metric_reaching("ztgate_requests_total", &[("reason", "invalid_svid")], 1.0)
            .await,
        1.0
    );
}

#[tokio::test]
async fn optional_client_auth_lets_filters_decide() {
    let mut setup = Setup::new("optional");
    setup.client_auth = "optional";
    let env = setup.start().await;
    // The handshake succeeds without a certificate; mtls denies the request.
    let ch = client::connect(&env.target()).await.unwrap();
    let err = client::orders(ch)
        .get(Request::default())
        .await
        .unwrap_err();
    assert_denied(
        &err,
        tonic::Code::Unauthenticated,
        "client_cert_missing",
        None,
    );
    // With a certificate it passes.
    client::orders(env.web_channel().await)
        .get(Request::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn shadow_mode_records_but_does_not_deny() {
    let mut setup = Setup::new("shadow");
    setup.policy =
        "pipeline: [sanitize, mtls, route]\nmtls:\n  mode: shadow\n  trust_domains: [acme.test]\n";
    let env = setup.start().await;
    let foreign = env.svid("spiffe://partner.test/ns/shop/sa/web");
    client::orders(env.channel_as(&foreign).await)
        .get(Request::default())
        .await
        .unwrap();
    assert_eq!(
        env.metric_reaching(
            "ztgate_requests_total",
            &[
                ("decision", "shadow_deny"),
                ("reason", "trust_domain_not_allowed")
            ],
            1.0
        )
        .await,
        1.0
    );
}
