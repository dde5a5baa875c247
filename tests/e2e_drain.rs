#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Drain on SIGTERM, timed end to end on a real process: `/readyz` 503 at
//! once while `/healthz` stays up, new streams on open connections served,
//! new connections refused, and the process gone as soon as nothing is in
//! flight — not after the whole grace period, and never later than it.

mod support;

use std::time::{Duration, Instant};

use support::{eventually, signal, Env, Setup};
use ztgate_testkit::client;
use ztgate_testkit::harness::{free_port, Until};
use ztgate_testkit::proto::Request;

/// Whether process `pid` is gone (exited; a zombie counts as gone).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// `env` with its gateway replaced by one whose `server.grace_period` is
/// `grace` (Setup's is 1s), on fresh ports, in `dir/<grace>`.
fn with_grace(mut env: Env, grace: &str) -> Env {
    let sub = env.dir.join(format!("grace-{grace}"));
    std::fs::create_dir_all(&sub).unwrap();
    for entry in std::fs::read_dir(&env.dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() && p.extension().is_some_and(|e| e == "pem") {
            std::fs::copy(&p, sub.join(p.file_name().unwrap())).unwrap();
        }
    }
    let (listen, admin) = (free_port().unwrap(), free_port().unwrap());
    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    assert!(text.contains("grace_period: 1s"), "{text}");
    let yaml = text
        .replace("grace_period: 1s", &format!("grace_period: {grace}"))
        .replace(
            &format!("address: 127.0.0.1:{}", env.gw.listen.port()),
            &format!("address: 127.0.0.1:{listen}"),
        )
        .replace(
            &format!("address: 127.0.0.1:{}", env.gw.admin.port()),
            &format!("address: 127.0.0.1:{admin}"),
        );
    env.gw = support::start_gateway(&sub, &yaml, listen, admin, Until::Ready);
    env
}

/// A metric without labels, or `None` when /metrics is not answering.
fn gauge(env: &Env, name: &str) -> Option<f64> {
    let (_, text) = env.gw.admin_get("/metrics").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Wait (up to `limit`) for the gateway process to be gone; how long after
/// `since` it went.
async fn exit_time(env: &Env, since: Instant, limit: Duration) -> Duration {
    let pid = env.gw.pid();
    assert!(
        eventually(limit, async || exited(pid)).await,
        "still running {limit:?} after SIGTERM:\n{}",
        env.gw.log_text()
    );
    since.elapsed()
}

/// A call the backend answers after `delay_ms`; its result and when it
/// ended.
fn slow_call(
    ch: &tonic::transport::Channel,
    delay_ms: u32,
) -> tokio::task::JoinHandle<(Result<String, tonic::Status>, Instant)> {
    let ch = ch.clone();
    tokio::spawn(async move {
        let r = client::orders(ch)
            .get(Request {
                delay_ms,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().backend);
        (r, Instant::now())
    })
}

/// Idle, with an open client connection: SIGTERM stops the process at once
/// (the connection gets GOAWAY and closes), not after the 10 s grace period
/// Pingora would sleep through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_gateway_exits_at_once_on_sigterm() {
    let env = with_grace(Setup::new("drain-idle").start().await, "10s");
    let ch = env.web_channel().await;
    client::orders(ch.clone())
        .get(Request::default())
        .await
        .expect("served before the signal");

    let term = Instant::now();
    signal(env.gw.pid(), "-TERM");
    let took = exit_time(&env, term, Duration::from_secs(12)).await;
    println!("idle gateway exited {took:?} after SIGTERM (grace period 10s)");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let log = env.gw.log_text();
    assert!(log.contains("SIGTERM: draining"), "{log}");
    assert!(log.contains("drain complete"), "{log}");
    assert!(std::net::TcpStream::connect(env.gw.listen).is_err());
}

/// A call in flight keeps the process up, and meanwhile: `/readyz` 503
/// `draining`, `/healthz` 200, a new stream on the open connection served,
/// a new connection refused at accept. The process goes right after the
/// call ends, well before the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_call_holds_the_drain_and_completes() {
    let env = with_grace(Setup::new("drain-busy").start().await, "10s");
    let ch = env.web_channel().await;
    let slow = slow_call(&ch, 2500);
    assert!(
        eventually(Duration::from_secs(5), async || gauge(
            &env,
            "ztgate_requests_in_flight"
        ) == Some(1.0))
        .await,
        "the slow call is in flight"
    );

    let term = Instant::now();
    signal(env.gw.pid(), "-TERM");
    // Not ready at once; the admin listener stays up.
    let mut readyz = (0, String::new());
    assert!(
        eventually(Duration::from_secs(2), async || {
            readyz = env.gw.admin_get("/readyz").unwrap();
            readyz.0 == 503
        })
        .await,
        "{readyz:?}"
    );
    println!(
        "/readyz 503 {:?} after SIGTERM: {:?}",
        term.elapsed(),
        readyz.1
    );
    assert!(readyz.1.contains("draining"), "{readyz:?}");
    assert_eq!(env.gw.admin_get("/healthz").unwrap().0, 200);

    // A new stream on the open connection is served.
    let started = Instant::now();
    let r = client::orders(ch.clone())
        .get(Request::default())
        .await
        .expect("a new stream on an open connection is served while draining");
    assert_eq!(r.into_inner().backend, "backend-0");
    // A new connection is not.
    let target = env
        .target()
        .with_identity(&env.web.cert_pem, &env.web.key_pem);
    let fresh = match client::connect(&target).await {
        Ok(ch) => client::orders(ch)
            .get(Request::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(fresh.is_err(), "a new connection while draining: {fresh:?}");
    println!(
        "new stream served, new connection refused within {:?}: {fresh:?}",
        started.elapsed()
    );
    assert!(
        !slow.is_finished(),
        "all of the above happened while the slow call was in flight"
    );
    let refused = support::metric_reaching(
        &env.gw,
        "ztgate_connections_refused_total",
        &[("reason", "draining")],
        1.0,
    )
    .await;
    assert!(refused >= 1.0, "{refused}");
    assert_eq!(env.gw.admin_get("/healthz").unwrap().0, 200);

    let (backend, done) = slow.await.unwrap();
    assert_eq!(backend.expect("the in-flight call completes"), "backend-0");
    let took = exit_time(&env, term, Duration::from_secs(12)).await;
    let after_call = done.elapsed();
    println!(
        "call done {:?} after SIGTERM; exited {took:?} after SIGTERM, {after_call:?} after the call",
        done - term
    );
    assert!(after_call < Duration::from_millis(1500), "{after_call:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// The grace period bounds the drain: a call longer than it is cut, and the
/// process exits at its end (Setup's grace period is 1s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_bounds_the_drain() {
    let env = Setup::new("drain-grace").start().await;
    let ch = env.web_channel().await;
    let slow = slow_call(&ch, 8000);
    assert!(
        eventually(Duration::from_secs(5), async || gauge(
            &env,
            "ztgate_requests_in_flight"
        ) == Some(1.0))
        .await,
        "the slow call is in flight"
    );
    let term = Instant::now();
    signal(env.gw.pid(), "-TERM");
    let took = exit_time(&env, term, Duration::from_secs(6)).await;
    println!("exited {took:?} after SIGTERM with an 8 s call in flight (grace period 1s)");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(slow.await.unwrap().0.is_err(), "the call was cut");
    assert!(
        env.gw.log_text().contains("grace period over"),
        "{}",
        env.gw.log_text()
    );
}
