#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Upstream pools through a real gateway and real tonic backends: active
//! gRPC health checks, passive ejection, retry, load-balancing policies,
//! readiness and deadlines.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::{assert_denied, eventually, Env, Setup};
use ztgate_testkit::client;
use ztgate_testkit::proto::Request;

/// `routes:` sending `orders.v1.Orders` to pool `orders`, followed by `pool`
/// (the YAML body of `upstreams.orders`, indented four spaces).
fn routing(pool: &str) -> String {
    format!(
        "routes:\n  - name: orders\n    match: {{ grpc: \"orders.v1.Orders\" }}\n    select: [{{ upstream: orders }}]\nupstreams:\n  orders:\n{pool}"
    )
}

/// Health checks every 100 ms, two results to flip.
const FAST_CHECKS: &str = "    health_check: { interval: 100ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2 }\n";

async fn start(name: &str, backends: usize, routing: &str) -> Env {
    let mut s = Setup::new(name);
    s.routing = routing;
    s.backends = backends;
    s.start().await
}

fn healthy(env: &Env) -> f64 {
    env.metric(
        "ztgate_upstream_healthy_backends",
        &[("upstream", "orders")],
    )
}

/// Wait until `healthy(env) == n` (bounded: the thresholds need ~200 ms).
async fn wait_healthy(env: &Env, n: f64) {
    assert!(
        eventually(Duration::from_secs(5), async || healthy(env) == n).await,
        "healthy backends stayed {} (want {n})\n{}",
        healthy(env),
        env.gw.log_text()
    );
}

/// Which backend answered each of `n` sequential calls.
async fn spread(ch: &tonic::transport::Channel, n: usize) -> HashMap<String, usize> {
    let mut c = client::orders(ch.clone());
    let mut out = HashMap::new();
    for _ in 0..n {
        let r = c.get(Request::default()).await.unwrap().into_inner();
        *out.entry(r.backend).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_backend_is_taken_out_and_put_back() {
    let pool = "    backends: [\"127.0.0.1:{B0}\", \"127.0.0.1:{B1}\"]\n    health_check: { interval: 100ms, timeout: 100ms, service: orders.v1.Orders, healthy_threshold: 2, unhealthy_threshold: 2 }\n";
    let mut env = start("hc-serving", 2, &routing(pool)).await;
    let ch = env.web_channel().await;
    wait_healthy(&env, 2.0).await;
    let s = spread(&ch, 10).await;
    assert_eq!((s["backend-0"], s["backend-1"]), (5, 5), "{s:?}");

    env.backends[1].set_serving(false).await;
    wait_healthy(&env, 1.0).await;
    assert_eq!(
        spread(&ch, 10).await,
        HashMap::from([("backend-0".into(), 10)])
    );

    env.backends[1].set_serving(true).await;
    wait_healthy(&env, 2.0).await;
    let s = spread(&ch, 10).await;
    assert_eq!(s.len(), 2, "backend-1 is back: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_gets_no_traffic_after_the_fall_threshold() {
    // Passive ejection off: the active checks alone must take it out.
    let pool = format!(
        "    backends: [\"127.0.0.1:{{B0}}\", \"127.0.0.1:{{B1}}\"]\n    passive: {{ failures: 0 }}\n{FAST_CHECKS}"
    );
    let mut env = start("hc-killed", 2, &routing(&pool)).await;
    let ch = env.web_channel().await;
    wait_healthy(&env, 2.0).await;
    env.backends.remove(1).stop().await;
    wait_healthy(&env, 1.0).await;
    assert_eq!(
        spread(&ch, 20).await,
        HashMap::from([("backend-0".into(), 20)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_with_a_backend_killed_fails_only_unavailable_and_only_briefly() {
    let interval = Duration::from_millis(200);
    let pool = "    backends: [\"127.0.0.1:{B0}\", \"127.0.0.1:{B1}\"]\n    health_check: { interval: 200ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2 }\n";
    let mut env = start("hc-load", 2, &routing(pool)).await;
    let mut c = client::orders(env.web_channel().await);
    wait_healthy(&env, 2.0).await;

    let mut victim = Some(env.backends.remove(1));
    let mut killed_at = None;
    let mut failures = Vec::new();
    let mut after_kill = 0;
    // Bounded: at most 2,000 calls, and 1.5 s of calls after the kill.
    for i in 0..2000 {
        if i == 50 {
            victim.take().unwrap().stop().await;
            killed_at = Some(Instant::now());
        }
        if killed_at.is_some_and(|t| t.elapsed() > Duration::from_millis(1500)) {
            break;
        }
        if killed_at.is_some() {
            after_kill += 1;
        }
        let r = c.get(Request::default()).await;
        if let Err(e) = r {
            failures.push((Instant::now(), e));
        }
    }
    let killed_at = killed_at.expect("the loop reached the kill");
    for (at, e) in &failures {
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        // Fall threshold (2) × interval, plus one interval of slack.
        assert!(
            at.duration_since(killed_at) < interval * 3,
            "a call failed {:?} after the kill: {e:?}",
            at.duration_since(killed_at)
        );
    }
    assert!(after_kill > 10, "only {after_kill} calls after the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_caller_on_one_backend() {
    let pool = format!(
        "    backends: [\"127.0.0.1:{{B0}}\", \"127.0.0.1:{{B1}}\", \"127.0.0.1:{{B2}}\"]\n    lb: consistent_hash\n    hash_on: spiffe_id\n{FAST_CHECKS}"
    );
    let mut env = start("lb-hash", 3, &routing(&pool)).await;
    let a = env.svid("spiffe://acme.test/ns/shop/sa/alice");
    let b = env.svid("spiffe://acme.test/ns/shop/sa/bob");
    let (cha, chb) = (env.channel_as(&a).await, env.channel_as(&b).await);
    let sa = spread(&cha, 12).await;
    let sb = spread(&chb, 12).await;
    assert_eq!(sa.len(), 1, "alice moved: {sa:?}");
    assert_eq!(sb.len(), 1, "bob moved: {sb:?}");

    // Alice's backend goes out: she moves to one other backend, then back.
    let home: String = sa.keys().next().unwrap().clone();
    let i: usize = home.trim_start_matches("backend-").parse().unwrap();
    env.backends[i].set_serving(false).await;
    wait_healthy(&env, 2.0).await;
    let away = spread(&cha, 12).await;
    assert_eq!(away.len(), 1, "{away:?}");
    assert!(!away.contains_key(&home), "{away:?}");
    env.backends[i].set_serving(true).await;
    wait_healthy(&env, 3.0).await;
    assert_eq!(spread(&cha, 6).await, HashMap::from([(home, 6)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_busy_backend() {
    let pool =
        "    backends: [\"127.0.0.1:{B0}\", \"127.0.0.1:{B1}\"]\n    lb: least_connections\n";
    let env = start("lb-least", 2, &routing(pool)).await;
    let ch = env.web_channel().await;
    // One slow call holds a backend for as long as the test needs it (it
    // is cancelled below, so no fixed duration has to outlast the short
    // calls on a loaded machine)...
    let mut slow = client::orders(ch.clone());
    let busy_call = tokio::spawn(async move {
        slow.get(Request {
            delay_ms: 120_000,
            ..Default::default()
        })
        .await
    });
    // It is in flight once a backend has it.
    assert!(
        eventually(Duration::from_secs(5), async || env
            .backends
            .iter()
            .map(|b| b.received())
            .sum::<usize>()
            > 0)
        .await
    );
    let busy = env
        .backends
        .iter()
        .find(|b| b.received() > 0)
        .map(|b| b.name.clone())
        .unwrap();
    // ...so every short call meanwhile goes to the other one.
    let s = spread(&ch, 10).await;
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(!s.contains_key(&busy), "busy {busy}, short calls {s:?}");
    // Cancelled, the slow call ends at the gateway too; idle again, both
    // backends take calls.
    busy_call.abort();
    assert!(
        eventually(Duration::from_secs(10), async || spread(&ch, 10)
            .await
            .len()
            == 2)
        .await,
        "calls did not spread over both backends once idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_backend_is_unavailable_at_once_and_not_ready() {
    let pool = format!("    backends: [\"127.0.0.1:{{B0}}\"]\n{FAST_CHECKS}");
    let mut env = start("hc-none", 1, &routing(&pool)).await;
    let mut c = client::orders(env.web_channel().await);
    env.backends[0].set_serving(false).await;
    wait_healthy(&env, 0.0).await;

    let t = Instant::now();
    let err = c.get(Request::default()).await.unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_denied(&err, tonic::Code::Unavailable, "no_healthy_backend", None);
    let (code, body) = env.gw.admin_get("/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(
        body.contains("upstream orders has no healthy backend"),
        "{body}"
    );

    env.backends[0].set_serving(true).await;
    wait_healthy(&env, 1.0).await;
    assert_eq!(env.gw.admin_get("/readyz").unwrap().0, 200);
    c.get(Request::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_connect_failures_eject_passively() {
    let pool = "    backends: [\"127.0.0.1:{DOWN}\"]\n    connect_timeout: 300ms\n    passive: { failures: 2, ejection: 10s }\n";
    let env = start("passive", 0, &routing(pool)).await;
    let mut c = client::orders(env.web_channel().await);
    for _ in 0..2 {
        let err = c.get(Request::default()).await.unwrap_err();
        assert_denied(
            &err,
            tonic::Code::Unavailable,
            "upstream_connect_failed",
            None,
        );
    }
    let err = c.get(Request::default()).await.unwrap_err();
    assert_denied(&err, tonic::Code::Unavailable, "no_healthy_backend", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_once_on_another_backend() {
    // Passive ejection off so every call meets the dead backend in turn.
    let pool =
        "    backends: [\"127.0.0.1:{DOWN}\", \"127.0.0.1:{B0}\"]\n    passive: { failures: 0 }\n";
    let env = start("retry", 1, &routing(pool)).await;
    let ch = env.web_channel().await;
    assert_eq!(
        spread(&ch, 10).await,
        HashMap::from([("backend-0".into(), 10)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_request_timeout_caps_the_callers_deadline() {
    // The caller allows 5 s, the pool 300 ms, the backend takes 2 s: the
    // call must end at ~300 ms with DEADLINE_EXCEEDED from the gateway (the
    // backend is given a little longer, so it does not race the gateway).
    let pool = "    backends: [\"127.0.0.1:{B0}\"]\n    request_timeout: 300ms\n";
    let env = start("deadline", 1, &routing(pool)).await;
    let mut c = client::orders(env.web_channel().await);
    let mut req = tonic::Request::new(Request {
        delay_ms: 2000,
        ..Default::default()
    });
    // As metadata, so tonic's client does not enforce it itself.
    req.metadata_mut()
        .insert("grpc-timeout", "5S".parse().unwrap());
    let t = Instant::now();
    let err = c.get(req).await.unwrap_err();
    let took = t.elapsed();
    assert_denied(
        &err,
        tonic::Code::DeadlineExceeded,
        "upstream_timeout",
        None,
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_grpc_timeout_shorter_than_the_backend_is_deadline_exceeded() {
    let env = start(
        "caller-deadline",
        1,
        &routing("    backends: [\"127.0.0.1:{B0}\"]\n"),
    )
    .await;
    // curl does not enforce grpc-timeout itself: what it prints is the gateway's answer.
    let t = Instant::now();
    let out = support::curl_get(
        &env,
        &Request {
            delay_ms: 2000,
            ..Default::default()
        },
        &["-i", "-H", "grpc-timeout: 200m"],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("grpc-status: 4"), "{text}");
    assert!(text.contains("grpc-message: upstream_timeout"), "{text}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}
