#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Downstream mTLS: the handshake refuses what it must, the `mtls` filter
//! applies the X.509-SVID rules and the SPIFFE policy.

mod support;

use support::{assert_denied, refused, Setup};
use ztgate_testkit::client;
use ztgate_testkit::pki::{Ca, LeafSpec};
use ztgate_testkit::proto::Request;

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

/// Issue 15: with a trust bundle per trust domain, a partner's CA cannot
/// mint identities in our trust domain (nor ours in theirs); genuine SVIDs
/// of both domains get in; the partner's bundle rotated on disk applies to
/// the next handshakes without a restart.
#[tokio::test]
async fn trust_bundles_bind_each_trust_domain_to_its_ca() {
    let side = support::workdir("trust-bundles-partner");
    let partner = Ca::new("partner.test").unwrap();
    let partner_pem = partner.write(&side, "partner").unwrap();
    // `mtls` last: the binding is the handshake's, whatever the order.
    let policy = format!(
        "pipeline: [route, sanitize, mtls]
mtls:
  trust_domains: [acme.test, partner.test]
  allowed_ids: [\"spiffe://acme.test/ns/shop/**\", \"spiffe://partner.test/**\"]
  trust_bundles:
    acme.test: ca.pem
    partner.test: {}
",
        partner_pem.display()
    );
    let mut setup = Setup::new("trust-bundles");
    setup.policy = &policy;
    let env = setup.start().await;
    let as_ =
        |who: &ztgate_testkit::pki::Issued| env.target().with_identity(&who.cert_pem, &who.key_pem);
    let partner_id = "spiffe://partner.test/ns/pay/sa/api";

    // Genuine SVIDs of both trust domains.
    assert!(!refused(&as_(&env.web)).await);
    let partner_api = partner.svid(partner_id).unwrap();
    assert!(!refused(&as_(&partner_api)).await);
    // Each CA minting the other's trust domain, and a trust domain with no
    // bundle: refused in the handshake, whatever the mtls policy allows.
    assert!(refused(&as_(&partner.svid(support::WEB_ID).unwrap())).await);
    assert!(refused(&as_(&env.svid(partner_id))).await);
    assert!(refused(&as_(&env.svid("spiffe://other.test/ns/x/sa/y"))).await);
    let refusals =
        |reason: &str| env.metric("ztgate_client_cert_refusals_total", &[("reason", reason)]);
    assert!(refusals("wrong_trust_bundle") >= 2.0);
    assert!(refusals("unknown_trust_domain") >= 1.0);
    // A certificate without a SPIFFE ID from client_ca passes the handshake
    // (client_ca vouches for it) and is then judged by the mtls filter.
    let plain = env.leaf(LeafSpec {
        common_name: "plain".into(),
        ..LeafSpec::default()
    });
    let err = client::orders(env.channel_as(&plain).await)
        .get(Request::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().starts_with("invalid_svid"), "{err:?}");

    // The partner rotates its CA: new handshakes follow the file.
    let rotated = Ca::new("partner.test").unwrap();
    std::fs::write(&partner_pem, rotated.cert_pem()).unwrap();
    let renewed = rotated.svid(partner_id).unwrap();
    let applied = support::eventually(std::time::Duration::from_secs(15), async || {
        refused(&as_(&partner_api)).await && !refused(&as_(&renewed)).await
    })
    .await;
    assert!(applied, "the rotated partner bundle did not apply");
    assert!(!refused(&as_(&env.web)).await);

    // After a SIGHUP, and on a second replica with the same files, the
    // binding holds the same way.
    let forged = partner.svid(support::WEB_ID).unwrap();
    let forged_again = rotated.svid(support::WEB_ID).unwrap();
    support::sighup_reloaded(&env.gw).await;
    let replica = env.replica("b");
    for url in [env.gw.url(), replica.url()] {
        let at = |who: &ztgate_testkit::pki::Issued| env.target_at(url.clone(), who);
        assert!(!refused(&at(&env.web)).await, "{url}");
        assert!(!refused(&at(&renewed)).await, "{url}");
        assert!(refused(&at(&forged_again)).await, "{url}");
        assert!(refused(&at(&forged)).await, "{url}");
        assert!(refused(&at(&partner_api)).await, "{url}");
    }
    let _ = std::fs::remove_dir_all(&side);
}

/// Issue 15: `listener.tls.crl`. A certificate its CA's CRL revokes fails
/// the handshake; a CRL rotated on disk applies to the next handshakes
/// without a restart; with `client_auth: optional` a revoked certificate
/// counts as none (the mtls filter then says `client_cert_missing`).
#[tokio::test]
async fn revoked_client_certificates_are_refused() {
    let side = support::workdir("crl-partner");
    let partner = Ca::new("partner.test").unwrap();
    let partner_pem = partner.write(&side, "partner").unwrap();
    let (revoked, later) = (
        partner.svid("spiffe://partner.test/ns/pay/sa/old").unwrap(),
        partner.svid("spiffe://partner.test/ns/pay/sa/api").unwrap(),
    );
    let crl = side.join("partner.crl");
    std::fs::write(&crl, partner.crl(&[&revoked], 86_400).unwrap()).unwrap();
    // `mtls` last: revocation is the handshake's, whatever the order.
    let policy = format!(
        "pipeline: [route, sanitize, mtls]
mtls:
  trust_domains: [acme.test, partner.test]
  trust_bundles:
    acme.test: ca.pem
    partner.test: {}
",
        partner_pem.display()
    );
    for client_auth in ["require", "optional"] {
        let auth = format!("{client_auth}\n    crl: [\"{}\"]", crl.display());
        let mut setup = Setup::new("crl");
        setup.policy = &policy;
        setup.client_auth = &auth;
        let env = setup.start().await;
        let as_ = |who: &ztgate_testkit::pki::Issued| {
            env.target().with_identity(&who.cert_pem, &who.key_pem)
        };
        assert!(!refused(&as_(&later)).await, "{client_auth}");
        assert!(!refused(&as_(&env.web)).await, "{client_auth}");
        if client_auth == "require" {
            assert!(refused(&as_(&revoked)).await);
            // The CA revokes another certificate: the next handshakes
            // follow the file.
            std::fs::write(&crl, partner.crl(&[&revoked, &later], 86_400).unwrap()).unwrap();
            let applied = support::eventually(std::time::Duration::from_secs(15), async || {
                refused(&as_(&later)).await
            })
            .await;
            assert!(applied, "the rotated CRL did not apply");
            assert!(refused(&as_(&revoked)).await);
            assert!(!refused(&as_(&env.web)).await);
            // After a SIGHUP, and on a second replica reading the same CRL.
            support::sighup_reloaded(&env.gw).await;
            let replica = env.replica("b");
            for url in [env.gw.url(), replica.url()] {
                let at = |who: &ztgate_testkit::pki::Issued| env.target_at(url.clone(), who);
                assert!(refused(&at(&revoked)).await, "{url}");
                assert!(refused(&at(&later)).await, "{url}");
                assert!(!refused(&at(&env.web)).await, "{url}");
            }
            drop(replica);
            std::fs::write(&crl, partner.crl(&[&revoked], 86_400).unwrap()).unwrap();
        } else {
            let err = client::orders(env.channel_as(&revoked).await)
                .get(Request::default())
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
            assert!(err.message().starts_with("client_cert_missing"), "{err:?}");
        }
        assert!(
            env.metric(
                "ztgate_client_cert_refusals_total",
                &[("reason", "revoked")]
            ) >= 1.0
        );
        assert!(
            env.metric(
                "ztgate_crl_next_update_timestamp_seconds",
                &[("issuer", "partner.test test CA")]
            ) > 0.0
        );
    }
    let _ = std::fs::remove_dir_all(&side);
}

/// A CRL issued by an intermediate CA (`{ file, issuer }`): the leaves it
/// revokes are refused in the handshake, its other leaves (sent with their
/// intermediate) get through; a new CRL from it applies without restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intermediate_cas_crl_revokes_its_leaves() {
    let side = support::workdir("crl-intermediate");
    let mut setup = Setup::new("crl-int");
    let crl = side.join("issuing.crl");
    let issuer = side.join("issuing.pem");
    let auth = format!(
        "require\n    crl: [{{ file: \"{}\", issuer: \"{}\" }}]",
        crl.display(),
        issuer.display()
    );
    setup.client_auth = &auth;
    // A root of the test's own (the gateway's `client_ca` is made by
    // `start`), bound to acme.test as its trust bundle, with an
    // intermediate under it that issues the workloads' SVIDs.
    let root = Ca::new("acme-root").unwrap();
    let root_pem = root.write(&side, "root").unwrap();
    let inter = root.intermediate("issuing").unwrap();
    std::fs::write(&issuer, inter.cert_pem()).unwrap();
    let (revoked, kept) = (
        inter.svid(support::WEB_ID).unwrap(),
        inter.svid("spiffe://acme.test/ns/shop/sa/batch").unwrap(),
    );
    std::fs::write(&crl, inter.crl(&[&revoked], 86_400).unwrap()).unwrap();
    // `mtls` last: revocation is the handshake's, whatever the order.
    let policy = format!(
        "pipeline: [route, sanitize, mtls]\nmtls:\n  trust_domains: [acme.test]\n  trust_bundles:\n    acme.test: {}\n",
        root_pem.display()
    );
    setup.policy = &policy;
    let env = setup.start().await;
    let as_ =
        |who: &ztgate_testkit::pki::Issued| env.target().with_identity(&who.cert_pem, &who.key_pem);
    assert!(
        !refused(&as_(&kept)).await,
        "a leaf of the intermediate gets through"
    );
    assert!(
        refused(&as_(&revoked)).await,
        "the intermediate's CRL revokes it"
    );
    // The intermediate revokes the other leaf too: the next handshakes follow the file.
    std::fs::write(&crl, inter.crl(&[&revoked, &kept], 86_400).unwrap()).unwrap();
    let applied = support::eventually(std::time::Duration::from_secs(15), async || {
        refused(&as_(&kept)).await
    })
    .await;
    assert!(applied, "the rotated CRL did not apply");
    assert!(
        env.metric(
            "ztgate_crl_next_update_timestamp_seconds",
            &[("issuer", "issuing intermediate CA")]
        ) > 0.0
    );
    // After a SIGHUP, and on a second replica reading the same files.
    let third = inter.svid("spiffe://acme.test/ns/shop/sa/third").unwrap();
    support::sighup_reloaded(&env.gw).await;
    let replica = env.replica("b");
    for url in [env.gw.url(), replica.url()] {
        let at = |who: &ztgate_testkit::pki::Issued| env.target_at(url.clone(), who);
        assert!(refused(&at(&revoked)).await, "{url}");
        assert!(refused(&at(&kept)).await, "{url}");
        assert!(!refused(&at(&third)).await, "{url}");
    }
    let _ = std::fs::remove_dir_all(&side);
}

/// The SPIFFE ID is parsed once per connection, but the trust-domain and
/// allow-list rules are the generation's: narrowing them — by SIGHUP, or by
/// the watched config file alone — refuses the next call on a connection
/// that was allowed, and a replica (with `mtls` last in its pipeline here)
/// refuses the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_spiffe_policy_applies_to_open_connections() {
    let mut setup = Setup::new("spiffe-narrowed");
    setup.policy = "pipeline: [sanitize, route, mtls]\nmtls:\n  trust_domains: [acme.test]\n  allowed_ids: [\"spiffe://acme.test/ns/shop/**\"]\n";
    let env = setup.start().await;
    let open = client::orders(env.web_channel().await);
    for _ in 0..2 {
        let r = open
            .clone()
            .get(Request::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.metadata.get("x-ztgate-spiffe-id").map(String::as_str),
            Some(support::WEB_ID)
        );
    }
    // Each narrowing, the first by SIGHUP, the second by the watched config
    // file alone: the next call on the open connection is refused for the
    // new generation's reason.
    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    for ((from, to), reason, by_signal) in [
        (
            (
                "spiffe://acme.test/ns/shop/**",
                "spiffe://acme.test/ns/batch/**",
            ),
            "spiffe_id_not_allowed",
            true,
        ),
        (
            (
                "trust_domains: [acme.test]",
                "trust_domains: [partner.test]",
            ),
            "trust_domain_not_allowed",
            false,
        ),
    ] {
        let staged = env.dir.join("narrowed.yaml");
        std::fs::write(&staged, text.replace(from, to)).unwrap();
        std::fs::rename(&staged, &env.gw.config).unwrap();
        if by_signal {
            support::sighup_reloaded(&env.gw).await;
        }
        let err = support::eventually(std::time::Duration::from_secs(15), async || {
            matches!(
                open.clone().get(Request::default()).await,
                Err(e) if e.message().starts_with(reason)
            )
        })
        .await;
        assert!(err, "{reason} not applied:\n{}", env.gw.log_text());
        let err = open.clone().get(Request::default()).await.unwrap_err();
        assert_denied(&err, tonic::Code::PermissionDenied, reason, None);
    }

    let replica = env.replica("b");
    let on_replica = client::orders(env.channel_to(&replica, &env.web).await);
    let err = on_replica
        .clone()
        .get(Request::default())
        .await
        .unwrap_err();
    assert_denied(
        &err,
        tonic::Code::PermissionDenied,
        "trust_domain_not_allowed",
        None,
    );
}
