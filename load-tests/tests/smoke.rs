//! The CI smoke run: a short load against the real tonic echo backend over
//! loopback, closed and open loop, unary and streaming, plus the proxy
//! sampling (pointed at this very process).

// Test support code: a failed setup should fail the test loudly.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::net::TcpListener;
use ztgate_loadtest::conn::Endpoint;
use ztgate_loadtest::engine::{run, Watch, Workload};
use ztgate_loadtest::grpc::Method;
use ztgate_loadtest::schedule::Pacing;
use ztgate_loadtest::token::TokenSource;

async fn backend() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(ztgate_loadtest::backend::serve_tonic(l, "smoke".into()));
    addr
}

fn workload(method: Method, pacing: Pacing) -> Workload {
    Workload {
        method,
        payload: 64,
        stream_count: 5,
        fail_code: 0,
        connections: 2,
        streams: 4,
        pacing,
        warmup: Duration::from_millis(300),
        duration: Duration::from_secs(2),
        call_timeout: Duration::from_secs(5),
        headers: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_unary_against_the_echo_backend() {
    let addr = backend().await;
    let watch = Watch {
        pids: vec![std::process::id()],
        clk_tck: 100,
        redis: None,
    };
    let o = run(
        Endpoint::plain(addr),
        &workload(Method::Get, Pacing::Closed),
        TokenSource::None,
        &watch,
    )
    .await
    .unwrap();
    assert!(o.calls_ok > 100, "{o:?}");
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    assert_eq!(o.latency.count, o.calls_ok);
    assert!(o.latency.p50_us > 0.0 && o.latency.p50_us <= o.latency.p99_us);
    let p = o.proxy.unwrap();
    assert!(p.cpu_s > 0.0 && p.rss_kib > 0, "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_streaming_keeps_the_offered_rate() {
    let addr = backend().await;
    let o = run(
        Endpoint::plain(addr),
        &workload(Method::Watch, Pacing::Open { rate: 200.0 }),
        TokenSource::None,
        &Watch::default(),
    )
    .await
    .unwrap();
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    // 200/s for 2 s: 400 calls, give or take the window edges.
    assert!((380..=420).contains(&o.calls_ok), "{}", o.calls_ok);
    assert_eq!(o.messages, o.calls_ok * 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_are_counted_by_code() {
    let addr = backend().await;
    let mut w = workload(Method::Get, Pacing::Closed);
    w.duration = Duration::from_millis(500);
    w.fail_code = 7;
    let o = run(
        Endpoint::plain(addr),
        &w,
        TokenSource::None,
        &Watch::default(),
    )
    .await
    .unwrap();
    assert_eq!(o.calls_ok, 0);
    assert_eq!(o.errors.keys().collect::<Vec<_>>(), ["PERMISSION_DENIED"]);
    assert!(o.errors["PERMISSION_DENIED"] > 10, "{:?}", o.errors);
}

#[tokio::test]
async fn a_dead_target_fails_up_front() {
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let w = workload(Method::Get, Pacing::Closed);
    let err = run(
        Endpoint::plain(dead),
        &w,
        TokenSource::None,
        &Watch::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("connection 0"), "{err}");
}
