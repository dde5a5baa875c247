#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Proxying gRPC through ztgate: every RPC kind, large messages, backend
//! statuses and trailers, routing failures, header hygiene, metrics.

mod support;

use support::{assert_denied, Setup, WEB_ID};
use tokio_stream::StreamExt;
use ztgate_testkit::backend::{Backend, FAIL_DETAILS, FAIL_TRAILER_KEY, FAIL_TRAILER_VALUE};
use ztgate_testkit::client;
use ztgate_testkit::harness::unary_at;
use ztgate_testkit::proto::Request;

#[tokio::test]
async fn unary_and_all_streaming_kinds() {
    let env = Setup::new("kinds").start().await;
    let mut c = client::orders(env.web_channel().await);

    let r = c
        .get(Request {
            payload: b"ping".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.get_ref().payload, b"ping");
    assert_eq!(r.get_ref().backend, "backend-0");

    // Server streaming: many messages.
    let mut s = c
        .watch(Request {
            count: 500,
            payload: vec![7; 100],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(m) = s.message().await.unwrap() {
        assert_eq!(m.seq, n);
        n += 1;
    }
    assert_eq!(n, 500);

    // Client streaming.
    let msgs = (0..300).map(|_| Request {
        payload: vec![1; 1000],
        ..Default::default()
    });
    let r = c
        .upload(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.received_messages, r.received_bytes), (300, 300_000));

    // Bidi streaming: replies interleave with requests.
    let msgs = (0..200u32).map(|i| Request {
        payload: i.to_be_bytes().to_vec(),
        ..Default::default()
    });
    let mut s = c.chat(tokio_stream::iter(msgs)).await.unwrap().into_inner();
    let mut got = 0u32;
    while let Some(m) = s.next().await {
        let m = m.unwrap();
        assert_eq!(m.payload, got.to_be_bytes());
        got += 1;
    }
    assert_eq!(got, 200);
}

#[tokio::test]
async fn four_mib_message_round_trips() {
    let env = Setup::new("big").start().await;
    let mut c = client::orders(env.web_channel().await);
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = c
        .get(Request {
            payload: payload.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().payload, payload);
}

#[tokio::test]
async fn backend_status_details_and_binary_trailers_pass_unchanged() {
    let env = Setup::new("status").start().await;
    let mut c = client::orders(env.web_channel().await);
    let err = c
        .get(Request {
            fail_code: 5,
            fail_message: "order 42 not found".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "order 42 not found");
    assert_eq!(err.details(), FAIL_DETAILS);
    let bin = err
        .metadata()
        .get_bin(FAIL_TRAILER_KEY)
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(bin.as_ref(), FAIL_TRAILER_VALUE);

    // Same through a stream (status in trailers after messages).
    let err = c
        .watch(Request {
            fail_code: 9,
            fail_message: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn no_route_is_unimplemented_and_backend_down_is_unavailable() {
    let env = Setup::new("routing").start().await;
    let ch = env.web_channel().await;
    let err = unary_at(
        ch.clone(),
        "/inventory.v1.Stock/Get",
        tonic::Request::new(Request::default()),
    )
    .await
    .unwrap_err();
    assert_denied(&err, tonic::Code::Unimplemented, "no_route", None);
    assert!(err.metadata().get("x-request-id").is_some());

    let err = unary_at(
        ch,
        "/billing.v1.Invoices/Get",
        tonic::Request::new(Request::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("upstream_connect_failed"),
        "{}",
        err.message()
    );

    assert_eq!(
        env.metric_reaching(
            "ztgate_requests_total",
            &[("reason", "no_route"), ("grpc_status", "12")],
            1.0
        )
        .await,
        1.0
    );
    assert_eq!(
        env.metric_reaching(
            "ztgate_requests_total",
            &[
                ("upstream", "billing"),
                ("reason", "upstream_connect_failed")
            ],
            1.0
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn identity_headers_are_set_by_the_gateway_only() {
    let env = Setup::new("headers").start().await;
    let mut c = client::orders(env.web_channel().await);
    let mut req = tonic::Request::new(Request::default());
    for (k, v) in [
        ("x-ztgate-spiffe-id", "spiffe://acme.test/ns/admin/sa/root"),
        ("x-ztgate-subject", "admin"),
        (
            "x-forwarded-client-cert",
            "Hash=00;URI=spiffe://acme.test/ns/admin/sa/root",
        ),
        ("x-device-fingerprint", "forged"),
        ("x-request-id", "req-123"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        req.metadata_mut().insert(k, v.parse().unwrap());
    }
    let md = c.get(req).await.unwrap().into_inner().metadata;
    assert_eq!(
        md.get("x-ztgate-spiffe-id").map(String::as_str),
        Some(WEB_ID)
    );
    assert!(!md.contains_key("x-ztgate-subject"));
    assert!(!md.contains_key("x-device-fingerprint"));
    let xfcc = md.get("x-forwarded-client-cert").unwrap();
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(xfcc.contains(&format!("URI={WEB_ID}")), "{xfcc}");
    assert!(!xfcc.contains("admin"), "{xfcc}");
    assert_eq!(md.get("x-request-id").map(String::as_str), Some("req-123"));
    assert_eq!(
        md.get("traceparent").map(String::as_str),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );

    // A malformed request id is replaced.
    let mut req = tonic::Request::new(Request::default());
    req.metadata_mut()
        .insert("x-request-id", "bad id with spaces".parse().unwrap());
    let md = c.get(req).await.unwrap().into_inner().metadata;
    assert_eq!(md.get("x-request-id").map(|s| s.len()), Some(32));

    assert_eq!(
        env.metric_reaching(
            "ztgate_requests_total",
            &[
                ("route", "orders"),
                ("decision", "allow"),
                ("grpc_status", "0")
            ],
            2.0
        )
        .await,
        2.0
    );
    assert!(
        env.metric_reaching(
            "ztgate_filter_duration_seconds_count",
            &[("filter", "mtls")],
            2.0
        )
        .await
            >= 2.0
    );
}

#[tokio::test]
async fn h2_over_tls_upstream_with_client_certificate() {
    // The backend requires a client cert from the gateway, signed by its own CA.
    let dir = support::workdir("upstream-tls");
    let up_ca = ztgate_testkit::pki::Ca::new("upstream").unwrap();
    let up_server = up_ca.server().unwrap();
    let gw_client = up_ca.svid("spiffe://acme.test/gateway").unwrap();
    let backend = Backend::start_tls(
        "tls-backend",
        &up_server.cert_pem,
        &up_server.key_pem,
        Some(&up_ca.cert_pem()),
    )
    .await
    .unwrap();
    up_ca.write(&dir, "up-ca").unwrap();
    let (c, k) = gw_client.write(&dir, "gw-client").unwrap();
    let routing = format!(
        "routes:\n  - name: orders\n    match: {{ grpc: \"orders.v1.Orders\" }}\n    select: [{{ upstream: orders }}]\nupstreams:\n  orders:\n    backends: [\"127.0.0.1:{}\"]\n    tls:\n      ca: {}\n      sni: localhost\n      cert: {}\n      key: {}\n",
        backend.addr.port(),
        dir.join("up-ca.pem").display(),
        c.display(),
        k.display()
    );
    let mut setup = Setup::new("upstream-tls-gw");
    setup.routing = &routing;
    setup.backends = 0;
    let env = setup.start().await;
    let r = client::orders(env.web_channel().await)
        .get(Request {
            payload: b"tls".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.get_ref().backend, "tls-backend");
    assert_eq!(r.get_ref().payload, b"tls");
}
