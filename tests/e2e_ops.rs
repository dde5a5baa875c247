#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Operating ztgate: certificate rotation through a Kubernetes `..data`
//! symlink swap under load, a broken certificate refused, config reload under
//! load, SIGTERM draining in-flight calls, the audit trail, and `/metrics`
//! read with a Prometheus text-format parser.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{eventually, signal, Env, Setup, Until, WEB_ID};
use ztgate_testkit::client;
use ztgate_testkit::idp::Idp;
use ztgate_testkit::pki::LeafSpec;
use ztgate_testkit::proto::Request;

const TWO_POOLS: &str = "routes:\n  - name: orders\n    match: { grpc: \"orders.v1.Orders\" }\n    select: [{ upstream: first }]\nupstreams:\n  first:\n    backends: [\"127.0.0.1:{B0}\"]\n  second:\n    backends: [\"127.0.0.1:{B1}\"]\n";

/// The certificate a new TLS handshake gets, as base64 DER (whitespace-free
/// PEM body), read with `openssl s_client`. Empty when the handshake failed.
async fn served_cert(env: &Env) -> String {
    let port = env.gw.listen.port();
    let dir = env.dir.clone();
    tokio::task::spawn_blocking(move || pem_body(&support::s_client(port, &dir)))
        .await
        .unwrap()
}

/// The base64 body of the first PEM certificate in `text`.
fn pem_body(text: &str) -> String {
    let Some((_, rest)) = text.split_once("-----BEGIN CERTIFICATE-----") else {
        return String::new();
    };
    let Some((body, _)) = rest.split_once("-----END CERTIFICATE-----") else {
        return String::new();
    };
    body.split_whitespace().collect()
}

/// Replace `link` with a symlink to `target` in one rename (what kubelet does).
fn symlink_atomic(target: &str, link: &Path) {
    let mut name = link.file_name().unwrap().to_owned();
    name.push(".tmp");
    let tmp = link.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// Tallies of a background call loop.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn record<T, E: std::fmt::Display>(&self, r: &Result<T, E>) {
        match r {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Kubernetes-style Secret volume: `..2026_x/{tls.crt,tls.key}`, `..data`
/// pointing at one of them, and `tls.crt`/`tls.key` pointing through `..data`.
fn write_secret_version(secret: &Path, version: &str, cert: &str, key: &str) {
    let d = secret.join(version);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("tls.crt"), cert).unwrap();
    std::fs::write(d.join("tls.key"), key).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_symlink_swap_rotates_the_cert_under_load() {
    let env = Setup::new("ops-swap").start().await;
    env.web.write(&env.dir, "web").unwrap();
    let original_pem = std::fs::read_to_string(env.dir.join("server.pem")).unwrap();
    let original_key = std::fs::read_to_string(env.dir.join("server-key.pem")).unwrap();

    // Turn server.pem / server-key.pem into a mounted Secret holding the same pair.
    let secret = env.dir.join("secret");
    write_secret_version(&secret, "..2026_a", &original_pem, &original_key);
    symlink_atomic("..2026_a", &secret.join("..data"));
    symlink_atomic("..data/tls.crt", &secret.join("tls.crt"));
    symlink_atomic("..data/tls.key", &secret.join("tls.key"));
    symlink_atomic("secret/tls.crt", &env.dir.join("server.pem"));
    symlink_atomic("secret/tls.key", &env.dir.join("server-key.pem"));
    assert!(
        eventually(Duration::from_secs(8), async || env
            .metric("ztgate_config_reloads_total", &[("result", "ok")])
            >= 1.0)
        .await,
        "the symlinked files are picked up: {}",
        env.gw.log_text()
    );
    assert_eq!(served_cert(&env).await, pem_body(&original_pem));

    // Load: unary calls on an open channel, and on a fresh connection each time.
    let stop = Arc::new(AtomicBool::new(false));
    let (kept, fresh) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let ch = env.web_channel().await;
    let kept_loop = {
        let (stop, tally, ch) = (stop.clone(), kept.clone(), ch.clone());
        tokio::spawn(async move {
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tally.record(&client::orders(ch.clone()).get(Request::default()).await);
            }
        })
    };
    let target = env
        .target()
        .with_identity(&env.web.cert_pem, &env.web.key_pem);
    let fresh_loop = {
        let (stop, tally) = (stop.clone(), fresh.clone());
        tokio::spawn(async move {
            for _ in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = match client::connect(&target).await {
                    Ok(ch) => client::orders(ch)
                        .get(Request::default())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                tally.record(&r);
                // Pacing of the load (a new connection every ~20 ms), not
                // a wait for anything.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // A long stream opened before the swap; flow control holds it open
    // while we do not read.
    let (mut watch, mut seen) = open_watch(&ch, 7, 50).await;
    assert!(
        eventually(Duration::from_secs(10), async || kept.counts().0 > 0
            && fresh.counts().0 > 0)
        .await,
        "the load runs before the swap"
    );

    // Rotate: a new pair under a new version folder, then swap `..data`.
    let rotated = env.leaf(LeafSpec {
        common_name: "rotated.localhost".into(),
        dns: vec!["localhost".into()],
        ..LeafSpec::default()
    });
    write_secret_version(&secret, "..2026_b", &rotated.cert_pem, &rotated.key_pem);
    let swapped = Instant::now();
    symlink_atomic("..2026_b", &secret.join("..data"));
    let want = pem_body(&rotated.cert_pem);
    assert!(
        eventually(Duration::from_secs(10), async || served_cert(&env).await
            == want)
        .await,
        "new handshakes get the rotated certificate"
    );
    let latency = swapped.elapsed();
    println!("..data swap -> new cert served: {latency:?}");
    // Keep the load on after the swap: both loops are served more.
    let (k0, f0) = (kept.counts().0, fresh.counts().0);
    assert!(
        eventually(Duration::from_secs(10), async || kept.counts().0 > k0 + 10
            && fresh.counts().0 > f0 + 5)
        .await,
        "the load runs on after the swap"
    );

    // The stream opened before the swap completes.
    while let Some(m) = watch.message().await.unwrap() {
        assert_eq!(m.seq, seen);
        seen += 1;
    }
    assert_eq!(seen, 2000);

    stop.store(true, Ordering::Relaxed);
    kept_loop.await.unwrap();
    fresh_loop.await.unwrap();
    let ((k_ok, k_failed), (f_ok, f_failed)) = (kept.counts(), fresh.counts());
    println!(
        "calls during rotation: open channel {k_ok} ok / {k_failed} failed, \
         new connections {f_ok} ok / {f_failed} failed"
    );
    assert_eq!(k_failed, 0, "{:?}", kept.first_error.lock().unwrap());
    assert_eq!(f_failed, 0, "{:?}", fresh.first_error.lock().unwrap());
    assert!(k_ok > 10 && f_ok > 5, "the load ran: {k_ok} {f_ok}");
    assert_eq!(
        env.metric("ztgate_config_reloads_total", &[("result", "error")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_certificate_file_keeps_the_old_one() {
    let env = Setup::new("ops-badcert").start().await;
    env.web.write(&env.dir, "web").unwrap();
    let original = std::fs::read_to_string(env.dir.join("server.pem")).unwrap();
    assert_eq!(served_cert(&env).await, pem_body(&original));
    let errors = env.metric("ztgate_config_reloads_total", &[("result", "error")]);

    std::fs::write(
        env.dir.join("server.pem"),
        "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(8), async || env
            .metric("ztgate_config_reloads_total", &[("result", "error")])
            >= errors + 1.0)
        .await,
        "the broken file is refused and counted"
    );
    assert_eq!(served_cert(&env).await, pem_body(&original));
    client::orders(env.web_channel().await)
        .get(Request::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_route_change_under_load_is_fast_and_loses_nothing() {
    let mut setup = Setup::new("ops-hup");
    setup.routing = TWO_POOLS;
    setup.backends = 2;
    let env = setup.start().await;
    let ch = env.web_channel().await;

    // One call at a time, each with the instant it was sent and the backend.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = {
        let (stop, ch) = (stop.clone(), ch.clone());
        tokio::spawn(async move {
            let mut log: Vec<(Instant, Result<String, String>)> = Vec::new();
            for _ in 0..50_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = Instant::now();
                let r = client::orders(ch.clone())
                    .get(Request::default())
                    .await
                    .map(|r| r.into_inner().backend)
                    .map_err(|e| e.to_string());
                log.push((sent, r));
            }
            log
        })
    };
    // The load is on: the first pool serves.
    assert!(
        eventually(Duration::from_secs(10), async || env.backends[0].received()
            >= 10)
        .await
    );

    let good = std::fs::read_to_string(&env.gw.config).unwrap();
    let changed = good.replace("upstream: first", "upstream: second");
    std::fs::write(&env.gw.config, &changed).unwrap();
    let hup = Instant::now();
    signal(env.gw.pid(), "-HUP");
    // The reload is done and the new route serves.
    assert!(
        eventually(Duration::from_secs(10), async || env
            .metric("ztgate_config_reloads_total", &[("result", "ok")])
            >= 1.0
            && env.backends[1].received() > 0)
        .await,
        "{}",
        env.gw.log_text()
    );

    // A broken config on top: refused, the running one keeps serving.
    std::fs::write(
        &env.gw.config,
        changed.replace("upstream: second", "upstream: nowhere"),
    )
    .unwrap();
    signal(env.gw.pid(), "-HUP");
    assert!(
        eventually(Duration::from_secs(5), async || env
            .metric("ztgate_config_reloads_total", &[("result", "error")])
            >= 1.0)
        .await
    );
    // Calls go on after the refusal, still to the new route.
    let served = env.backends[1].received();
    assert!(
        eventually(Duration::from_secs(10), async || env.backends[1].received()
            > served + 10)
        .await
    );
    stop.store(true, Ordering::Relaxed);
    let log = calls.await.unwrap();

    let failed: Vec<_> = log.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed[0]
    );
    let first_new = log
        .iter()
        .position(|(_, r)| r.as_deref() == Ok("backend-1"))
        .expect("the new route serves");
    let latency = log[first_new].0.saturating_duration_since(hup);
    println!(
        "SIGHUP -> new route serving: {latency:?} ({} calls, 0 failed)",
        log.len()
    );
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    // The swap is atomic: once the new route served, the old one never does again
    // (also not after the broken config was refused).
    assert!(
        log[first_new..]
            .iter()
            .all(|(_, r)| r.as_deref() == Ok("backend-1")),
        "old route after the new one"
    );
    assert!(log.len() - first_new > 10, "calls ran after the swap");
}

/// Whether process `pid` is gone (exited; a zombie counts as gone).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_then_refuses() {
    // Setup's server.grace_period is 1s; the slow call takes 700 ms.
    let env = Setup::new("ops-term").start().await;
    let ch = env.web_channel().await;
    let (mut watch, mut seen) = open_watch(&ch, 3, 20).await;
    let arrived = env.backends[0].received();
    let slow = tokio::spawn({
        let ch = ch.clone();
        async move {
            client::orders(ch)
                .get(Request {
                    delay_ms: 700,
                    ..Default::default()
                })
                .await
        }
    });
    // The slow call is in flight: it reached the backend.
    assert!(
        eventually(Duration::from_secs(5), async || env.backends[0].received()
            > arrived)
        .await
    );

    let term = Instant::now();
    signal(env.gw.pid(), "-TERM");
    while let Some(m) = watch.message().await.unwrap() {
        assert_eq!(m.seq, seen);
        seen += 1;
    }
    assert_eq!(seen, 2000, "the in-flight stream finishes");
    let r = slow
        .await
        .unwrap()
        .expect("the in-flight unary call finishes");
    assert_eq!(r.into_inner().backend, "backend-0");
    println!("in-flight calls done {:?} after SIGTERM", term.elapsed());
    // During the drain, a new connection gets no service.
    let target = env
        .target()
        .with_identity(&env.web.cert_pem, &env.web.key_pem);
    let during = match client::connect(&target).await {
        Ok(ch) => client::orders(ch)
            .get(Request::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    println!("new call {:?} after SIGTERM: {during:?}", term.elapsed());
    assert!(
        during.is_err(),
        "a draining gateway takes no new connections"
    );

    // New connections are refused once the gateway has stopped.
    let pid = env.gw.pid();
    let gone = eventually(
        Duration::from_secs(6).saturating_sub(term.elapsed()),
        async || exited(pid),
    )
    .await;
    assert!(gone, "exits after the drain: {}", env.gw.log_text());
    println!("gateway exited {:?} after SIGTERM", term.elapsed());
    assert!(std::net::TcpStream::connect(env.gw.listen).is_err());
}

/// The value of a metric without labels (`Env::metric` reads labelled ones).
fn unlabelled(env: &Env, name: &str) -> f64 {
    let (_, text) = env.gw.admin_get("/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

/// Audit lines of `file` as JSON values (waits for `n` of them).
async fn audit_lines(file: &Path, n: usize) -> Vec<serde_json::Value> {
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    // The caller asserts the count: a shortfall shows there with the lines.
    eventually(Duration::from_secs(5), async || read().len() >= n).await;
    read()
}

fn with_id(id: &str) -> tonic::Request<Request> {
    let mut r = tonic::Request::new(Request::default());
    r.metadata_mut().insert("x-request-id", id.parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_for_allow_deny_and_shadow() {
    let mut setup = Setup::new("ops-audit");
    setup.policy = "pipeline: [sanitize, mtls, route]\nmtls:\n  trust_domains: [acme.test]\naudit:\n  output: audit.log\n";
    let env = setup.start().await;
    let file = env.dir.join("audit.log");

    client::orders(env.web_channel().await)
        .get(with_id("ops-allow-1"))
        .await
        .unwrap();
    const EVIL: &str = "spiffe://evil.test/ns/shop/sa/web";
    let evil = env.svid(EVIL);
    let err = client::orders(env.channel_as(&evil).await)
        .get(with_id("ops-deny-2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // Shadow: the same check, reported but not enforced.
    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    let shadow = text.replace(
        "mtls:\n  trust_domains: [acme.test]",
        "mtls:\n  mode: shadow\n  trust_domains: [other.test]",
    );
    assert_ne!(text, shadow);
    std::fs::write(&env.gw.config, shadow).unwrap();
    signal(env.gw.pid(), "-HUP");
    assert!(
        eventually(Duration::from_secs(5), async || env
            .metric("ztgate_config_reloads_total", &[("result", "ok")])
            >= 1.0)
        .await
    );
    let r = client::orders(env.web_channel().await)
        .get(with_id("ops-shadow-3"))
        .await
        .unwrap();
    assert_eq!(r.into_inner().backend, "backend-0");

    let lines = audit_lines(&file, 3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let field = |l: &serde_json::Value, k: &str| l[k].as_str().unwrap_or("").to_owned();
    let (allow, deny, shadow) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(field(allow, "request_id"), "ops-allow-1");
    assert_eq!(field(allow, "decision"), "allow");
    assert_eq!(field(allow, "reason"), "");
    assert_eq!(field(allow, "status"), "0");
    assert_eq!(field(allow, "spiffe_id"), WEB_ID);
    assert_eq!(field(allow, "route"), "orders");
    assert_eq!(field(allow, "upstream"), "orders");
    assert_eq!(field(allow, "path"), "/orders.v1.Orders/Get");
    assert_eq!(field(allow, "client_ip"), "127.0.0.1");
    assert_eq!(field(allow, "cert_thumbprint").len(), 64);

    assert_eq!(field(deny, "request_id"), "ops-deny-2");
    assert_eq!(field(deny, "decision"), "deny");
    assert_eq!(field(deny, "reason"), "trust_domain_not_allowed");
    assert_eq!(field(deny, "status"), "7");
    assert_eq!(field(deny, "spiffe_id"), EVIL);

    assert_eq!(field(shadow, "request_id"), "ops-shadow-3");
    assert_eq!(field(shadow, "decision"), "shadow_deny");
    assert_eq!(field(shadow, "reason"), "trust_domain_not_allowed");
    assert_eq!(field(shadow, "status"), "0");
    assert_eq!(field(shadow, "spiffe_id"), WEB_ID);
    assert_eq!(
        shadow["shadow_deny"],
        serde_json::json!(["mtls:trust_domain_not_allowed"])
    );
    for l in &lines {
        assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
        assert!(l["duration_us"].as_u64().is_some(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_burst_beyond_the_queue_drops_and_counts_never_blocks() {
    let mut setup = Setup::new("ops-audit-burst");
    setup.policy = "pipeline: [sanitize, mtls, route]\nmtls:\n  trust_domains: [acme.test]\naudit:\n  output: audit.log\n  queue: 1\n";
    let env = setup.start().await;
    const CALLS: usize = 200;
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(env.web_channel().await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CALLS {
        let ch = channels[i % channels.len()].clone();
        tasks.push(tokio::spawn(async move {
            client::orders(ch).get(Request::default()).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the burst took {took:?}");

    let file = env.dir.join("audit.log");
    let tally = || {
        let written = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .count();
        (written, unlabelled(&env, "ztgate_audit_dropped_total"))
    };
    // Every call is written or counted as dropped (asserted below).
    eventually(Duration::from_secs(5), async || {
        let (written, dropped) = tally();
        written + dropped as usize >= CALLS
    })
    .await;
    let (written, dropped) = tally();
    println!("audit burst: {CALLS} calls in {took:?}, {written} lines, {dropped} dropped");
    assert_eq!(written + dropped as usize, CALLS);
}

/// The metric names PRODUCT.md ("Admin listener") requires.
const REQUIRED: &[&str] = &[
    "ztgate_requests_total",
    "ztgate_request_duration_seconds",
    "ztgate_filter_duration_seconds",
    "ztgate_upstream_duration_seconds",
    "ztgate_jwks_refresh_total",
    "ztgate_jwt_cache_total",
    "ztgate_upstream_healthy_backends",
    "ztgate_certificate_expiry_timestamp_seconds",
    "ztgate_config_reloads_total",
    "ztgate_audit_dropped_total",
    "ztgate_build_info",
    "ztgate_proxy_protocol_headers_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_list_every_required_name() {
    let idp = Idp::start().await.unwrap();
    let mut setup = Setup::new("ops-metrics");
    let policy = format!(
        "pipeline: [sanitize, mtls, jwt, route]\nmtls:\n  trust_domains: [acme.test]\njwt:\n  issuers:\n    - issuer: {}\n      discovery: true\n      allow_insecure_http: true\n      audiences: [orders]\n      algorithms: [ES256]\n      typ: [at+jwt]\n",
        idp.issuer
    );
    setup.policy = &policy;
    let env = setup.start().await;
    let token = idp
        .token("alice", "orders:read", "orders", 300, serde_json::json!({}))
        .unwrap();
    let mut c = client::orders(env.web_channel().await);
    for _ in 0..2 {
        let mut r = tonic::Request::new(Request::default());
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        c.get(r).await.unwrap();
    }
    // A request is counted in Pingora's logging phase, just after the
    // response went out: wait for the second one to land (the assertions
    // below say what is missing if it does not).
    eventually(Duration::from_secs(5), async || {
        env.metric("ztgate_requests_total", &[("decision", "allow")]) >= 2.0
    })
    .await;

    let (status, text) = env.gw.admin_get("/metrics").unwrap();
    assert_eq!(status, 200);
    // Every line is a HELP/TYPE comment or a well-formed sample.
    for line in text.lines() {
        match prometheus_parse::LineInfo::parse(line) {
            prometheus_parse::LineInfo::Sample { value, .. } => {
                assert!(value.parse::<f64>().is_ok(), "bad value: {line}")
            }
            prometheus_parse::LineInfo::Ignored if line.starts_with('#') => {}
            prometheus_parse::LineInfo::Ignored => panic!("not Prometheus text: {line}"),
            _ => {}
        }
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let missing: Vec<_> = REQUIRED
        .iter()
        .filter(|n| !scrape.samples.iter().any(|s| s.metric == **n))
        .collect();
    assert!(missing.is_empty(), "missing from /metrics: {missing:?}");
    for n in REQUIRED {
        assert!(scrape.docs.contains_key(*n), "{n} has no HELP");
    }
    let kind = |n: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == n)
            .map(|s| s.value.clone())
            .unwrap()
    };
    for h in [
        "ztgate_request_duration_seconds",
        "ztgate_filter_duration_seconds",
        "ztgate_upstream_duration_seconds",
    ] {
        assert!(
            matches!(kind(h), prometheus_parse::Value::Histogram(_)),
            "{h} is a histogram"
        );
    }
    assert!(matches!(
        kind("ztgate_requests_total"),
        prometheus_parse::Value::Counter(_)
    ));
    // The labels PRODUCT.md gives, with the values this traffic produced.
    let allowed = scrape
        .samples
        .iter()
        .find(|s| s.metric == "ztgate_requests_total" && s.labels.get("decision") == Some("allow"));
    let allowed = allowed.expect("an allowed request is counted");
    assert_eq!(allowed.labels.get("route"), Some("orders"));
    assert_eq!(allowed.labels.get("upstream"), Some("orders"));
    assert_eq!(allowed.labels.get("grpc_status"), Some("0"));
    assert!(matches!(allowed.value, prometheus_parse::Value::Counter(v) if v >= 2.0));
    let expiry = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "ztgate_certificate_expiry_timestamp_seconds"
                && s.labels.get("name") == Some("server")
        })
        .expect("the server certificate's expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(matches!(expiry.value, prometheus_parse::Value::Gauge(v) if v > now));
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "ztgate_jwks_refresh_total"
            && s.labels.get("issuer") == Some(idp.issuer.as_str())));
}

/// Open a 2,000-reply `Watch` of 1,000-byte payloads filled with `fill` and
/// read its first `first` replies in order; returns the stream and how many
/// were read.
async fn open_watch(
    ch: &tonic::transport::Channel,
    fill: u8,
    first: u32,
) -> (tonic::Streaming<ztgate_testkit::proto::Reply>, u32) {
    let mut watch = client::orders(ch.clone())
        .watch(Request {
            count: 2000,
            payload: vec![fill; 1000],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for seq in 0..first {
        let m = watch.message().await.unwrap().unwrap();
        assert_eq!(m.seq, seq);
    }
    (watch, first)
}

/// `/readyz` counts only a gRPC listener this very process holds. Another
/// process on the port accepts connections (a test connection there
/// succeeds), but a gateway that has not bound it serves nothing: not
/// ready, and `/readyz` says why. Once the port is free, Pingora's retry
/// binds it, the gateway turns ready and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_port_is_taken_is_not_ready() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let mut setup = Setup::new("ops-port-taken");
    setup.listen_port = Some(port);
    setup.until = Until::Started;
    let env = setup.start().await;
    let why = format!("gRPC listener 127.0.0.1:{port} not bound by this process yet\n");
    // Every other reason (the first health checks) has had time to clear:
    // the listener is the one left.
    let only_the_listener = eventually(Duration::from_secs(5), async || {
        env.gw.admin_get("/readyz").unwrap() == (503, why.clone())
    })
    .await;
    assert!(
        only_the_listener,
        "{:?}\n{}",
        env.gw.admin_get("/readyz"),
        env.gw.log_text()
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    drop(squatter);
    let ready = eventually(Duration::from_secs(10), async || {
        matches!(env.gw.admin_get("/readyz"), Ok((200, _)))
    })
    .await;
    assert!(ready, "{}", env.gw.log_text());
    client::orders(env.web_channel().await)
        .get(Request::default())
        .await
        .unwrap();
}
