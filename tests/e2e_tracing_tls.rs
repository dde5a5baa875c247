#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Spans to an `https://` collector are sent over TLS verified against the
//! system's roots: here a throw-away CA named by `SSL_CERT_FILE`, which the
//! gateway inherits. Its own test binary: the variable is set for the whole
//! process before anything else runs, and no other test shares it.

mod support;

use std::time::Duration;

use support::Setup;
use ztgate_testkit::client;
use ztgate_testkit::otlp::OtlpReceiver;
use ztgate_testkit::pki::Ca;
use ztgate_testkit::proto::Request;

#[test]
fn spans_reach_an_https_collector_trusted_by_the_system_roots() {
    let dir = support::workdir("trace-tls-ca");
    let ca = Ca::new("collector.test").unwrap();
    let ca_file = ca.write(&dir, "collector-ca").unwrap();
    // Before any thread of this process exists (the runtime is built below).
    std::env::set_var("SSL_CERT_FILE", &ca_file);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = ca.server().unwrap();
        let rx = OtlpReceiver::start_grpc_tls(&server.cert_pem, &server.key_pem)
            .await
            .unwrap();
        let endpoint = format!("https://localhost:{}", rx.addr.port());
        let mut setup = Setup::new("trace-tls");
        let policy = format!(
            "pipeline: [sanitize, mtls, route]\nmtls:\n  trust_domains: [acme.test]\n  allowed_ids: [\"spiffe://acme.test/ns/shop/**\"]\ntracing:\n  otlp:\n    endpoint: \"{endpoint}\"\n  sample_ratio: 1.0\n"
        );
        setup.policy = Box::leak(policy.into_boxed_str());
        let env = setup.start().await;
        let reply = client::orders(env.web_channel().await)
            .get(Request::default())
            .await
            .unwrap()
            .into_inner();
        let tp = reply.metadata.get("traceparent").unwrap().clone();
        let trace = tp.split('-').nth(1).unwrap().to_owned();
        let span = rx
            .span_where(Duration::from_secs(15), |s| s.trace_id() == trace)
            .await;
        assert!(
            span.is_some(),
            "no span over TLS; gateway log:\n{}",
            env.gw.log_text()
        );
    });
}
