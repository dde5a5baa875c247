#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! OpenTelemetry tracing (PRODUCT.md "Tracing") against a real OTLP
//! receiver (testkit `otlp`: the collector's `TraceService` over gRPC, and
//! OTLP/HTTP): the client's W3C context continued, one gateway span with
//! its attributes and one event per filter, the upstream's `traceparent`
//! pointing at that span, sampling by ratio and by the client's flag,
//! denied calls traced, a dead or silent collector costing the calls
//! nothing (drops counted), and the settings applied by a SIGHUP.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::{eventually, signal, Env, Setup};
use ztgate_testkit::client;
use ztgate_testkit::harness::unary_at;
use ztgate_testkit::otlp::{OtlpReceiver, ReceivedSpan, SilentCollector};
use ztgate_testkit::proto::Request;

const PIPELINE: &str = "pipeline: [sanitize, mtls, route]\nmtls:\n  trust_domains: [acme.test]\n  allowed_ids: [\"spiffe://acme.test/ns/shop/**\"]\n";

/// How long a span may take to reach the receiver: the exporter's batch
/// delay is 1 s; the rest is a loaded machine's margin.
const SPAN_WAIT: Duration = Duration::from_secs(15);

/// The `pipeline:` and filters plus a `tracing:` section.
fn policy(tracing: &str) -> &'static str {
    Box::leak(format!("{PIPELINE}{tracing}").into_boxed_str())
}

fn tracing_section(endpoint: &str, extra: &str) -> String {
    format!(
        "tracing:\n  otlp:\n    endpoint: \"{endpoint}\"\n    timeout: 2s\n    headers: {{ x-api-key: e2e-key }}\n  service_name: ztgate-e2e\n{extra}"
    )
}

async fn start(name: &str, tracing: &str) -> Env {
    let mut setup = Setup::new(name);
    setup.policy = policy(tracing);
    setup.start().await
}

/// One `Orders/Get` with these request headers; the backend's echo of the
/// metadata it received.
async fn get(env: &Env, headers: &[(&'static str, &str)]) -> HashMap<String, String> {
    let mut req = tonic::Request::new(Request::default());
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    client::orders(env.web_channel().await)
        .get(req)
        .await
        .unwrap()
        .into_inner()
        .metadata
}

/// `00-<trace>-<parent>-<flags>` split; asserts the shape.
fn fields(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    assert_eq!(p[0], "00", "{tp}");
    assert_eq!(p[1].len(), 32, "{tp}");
    assert_eq!(p[2].len(), 16, "{tp}");
    assert_ne!(p[1], "0".repeat(32), "{tp}");
    assert_ne!(p[2], "0".repeat(16), "{tp}");
    (p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
}

/// A fresh client trace id per call, so spans of one test never match another's.
fn client_context() -> (String, String) {
    let n: u128 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (
        format!("{:032x}", n | (1 << 127)),
        "00f067aa0ba902b7".into(),
    )
}

async fn span_of_trace(rx: &OtlpReceiver, trace: &str) -> ReceivedSpan {
    let t = trace.to_owned();
    rx.span_where(SPAN_WAIT, move |s| s.trace_id() == t)
        .await
        .unwrap_or_else(|| panic!("no span of trace {trace}; got {:?}", rx.spans()))
}

/// Filter name and verdict of each event, in order.
fn verdicts(span: &ReceivedSpan) -> Vec<(String, String, Option<String>)> {
    span.events()
        .into_iter()
        .map(|(name, a)| {
            assert_eq!(a.get("ztgate.filter"), Some(&name), "{a:?}");
            (
                name,
                a.get("ztgate.verdict").cloned().unwrap_or_default(),
                a.get("ztgate.reason").cloned(),
            )
        })
        .collect()
}

/// At ratio 0: a client's sampled context is continued (parent-based) with
/// every attribute and an event per filter, the backend's traceparent has
/// the gateway span as parent and the client's tracestate; a call without
/// context records nothing but still passes a valid, unsampled context
/// upstream; a denied call is traced with its decision and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_context_is_continued_and_passed_upstream() {
    let rx = OtlpReceiver::start_grpc().await.unwrap();
    let env = start(
        "trace-continue",
        &tracing_section(&rx.endpoint(), "  sample_ratio: 0.0\n"),
    )
    .await;

    // 1. A sampled client context.
    let (trace, parent) = client_context();
    let md = get(
        &env,
        &[
            ("traceparent", &format!("00-{trace}-{parent}-01")),
            ("tracestate", "vendor=abc,other=1"),
            ("x-request-id", "req-trace-1"),
        ],
    )
    .await;
    let span = span_of_trace(&rx, &trace).await;
    assert_eq!(span.parent_span_id(), parent);
    assert_eq!(span.span.name, "orders.v1.Orders/Get");
    assert_eq!(span.span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(span.service_name.as_deref(), Some("ztgate-e2e"));
    for (k, v) in [
        ("ztgate.route", "orders"),
        ("ztgate.upstream", "orders"),
        ("ztgate.decision", "allow"),
        ("ztgate.request_id", "req-trace-1"),
        ("rpc.system", "grpc"),
        ("rpc.service", "orders.v1.Orders"),
        ("rpc.method", "Get"),
        ("client.address", "127.0.0.1"),
        ("server.address", "127.0.0.1"),
    ] {
        assert_eq!(
            span.str_attr(k).as_deref(),
            Some(v),
            "{k} in {:?}",
            span.span
        );
    }
    assert_eq!(span.int_attr("rpc.grpc.status_code"), Some(0));
    assert_eq!(
        span.int_attr("server.port"),
        Some(i64::from(env.backends[0].addr.port()))
    );
    assert_eq!(span.str_attr("ztgate.reason"), None);
    assert_eq!(
        verdicts(&span),
        ["sanitize", "mtls", "route"]
            .map(|f| (f.to_owned(), "continue".to_owned(), None))
            .to_vec()
    );
    assert!(span.span.end_time_unix_nano >= span.span.start_time_unix_nano);
    let upstream = md.get("traceparent").expect("traceparent upstream");
    let (t, p, flags) = fields(upstream);
    assert_eq!(t, trace);
    assert_eq!(
        p,
        span.span_id(),
        "the upstream's parent is the gateway span"
    );
    assert_eq!(flags, "01");
    assert_eq!(
        md.get("tracestate").map(String::as_str),
        Some("vendor=abc,other=1")
    );
    // The collector got the configured headers.
    assert_eq!(
        rx.exports()[0].get("x-api-key").map(String::as_str),
        Some("e2e-key")
    );

    // 2. No client context at ratio 0: nothing recorded, a valid unsampled
    // context upstream (a new trace, not the client's).
    let md = get(&env, &[]).await;
    let (unsampled, _, flags) = fields(md.get("traceparent").unwrap());
    assert_eq!(flags, "00");
    assert!(!md.contains_key("tracestate"));

    // 3. A denied call (no route), in a sampled client context.
    let (denied_trace, parent) = client_context();
    let mut req = tonic::Request::new(Request::default());
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{denied_trace}-{parent}-01").parse().unwrap(),
    );
    let err = unary_at(env.web_channel().await, "/inventory.v1.Stock/Get", req)
        .await
        .unwrap_err();
    support::assert_denied(&err, tonic::Code::Unimplemented, "no_route", None);
    let span = span_of_trace(&rx, &denied_trace).await;
    assert_eq!(span.str_attr("ztgate.decision").as_deref(), Some("deny"));
    assert_eq!(span.str_attr("ztgate.reason").as_deref(), Some("no_route"));
    assert_eq!(span.int_attr("rpc.grpc.status_code"), Some(12));
    assert_eq!(span.str_attr("ztgate.route"), None);
    assert_eq!(
        span.span.name, "ztgate",
        "an unrouted path does not name the span"
    );
    assert_eq!(
        verdicts(&span).last(),
        Some(&(
            "route".to_owned(),
            "deny".to_owned(),
            Some("no_route".to_owned())
        ))
    );

    // The unsampled call's span would have been queued before the denied
    // one's: it never came.
    assert!(rx.spans().iter().all(|s| s.trace_id() != unsampled));
    // Both sampled spans counted (an unlabelled series, which
    // `support::metric_of` does not read).
    let exported = || {
        let (_, text) = env.gw.admin_get("/metrics").unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("ztgate_trace_spans_exported_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(eventually(SPAN_WAIT, async || exported() >= 2.0).await);
}

/// At ratio 1 a call without context starts a new trace, and the upstream's
/// parent is its root span. A SIGHUP that leaves `tracing:` alone keeps
/// tracing; one that points it at another collector moves the spans there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_traces_and_reloads() {
    let first = OtlpReceiver::start_grpc().await.unwrap();
    let env = start(
        "trace-reload",
        &tracing_section(&first.endpoint(), "  sample_ratio: 1.0\n"),
    )
    .await;
    let md = get(&env, &[]).await;
    let (trace, parent, flags) = fields(md.get("traceparent").unwrap());
    assert_eq!(flags, "01");
    let span = span_of_trace(&first, &trace).await;
    assert_eq!(span.parent_span_id(), "", "a root span");
    assert_eq!(span.span_id(), parent);

    // A malformed traceparent (a 31-digit trace id) counts as none: the
    // call succeeds, a new trace starts, the client's tracestate stays out.
    let bad = "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01";
    let md = get(&env, &[("traceparent", bad), ("tracestate", "vendor=abc")]).await;
    let (trace, parent, flags) = fields(md.get("traceparent").unwrap());
    assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e473");
    assert_eq!(flags, "01");
    assert!(!md.contains_key("tracestate"), "{md:?}");
    let span = span_of_trace(&first, &trace).await;
    assert_eq!(span.parent_span_id(), "", "a root span");
    assert_eq!(span.span_id(), parent);

    // A reload that changes something else.
    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    std::fs::write(
        &env.gw.config,
        text.replace("connect_timeout: 300ms", "connect_timeout: 400ms"),
    )
    .unwrap();
    signal(env.gw.pid(), "-HUP");
    env.metric_reaching("ztgate_config_reloads_total", &[("result", "ok")], 1.0)
        .await;
    let md = get(&env, &[]).await;
    let (trace, _, _) = fields(md.get("traceparent").unwrap());
    span_of_trace(&first, &trace).await;

    // A reload to another collector.
    let second = OtlpReceiver::start_grpc().await.unwrap();
    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    std::fs::write(
        &env.gw.config,
        text.replace(&first.endpoint(), &second.endpoint()),
    )
    .unwrap();
    signal(env.gw.pid(), "-HUP");
    env.metric_reaching("ztgate_config_reloads_total", &[("result", "ok")], 2.0)
        .await;
    let md = get(&env, &[]).await;
    let (trace, _, _) = fields(md.get("traceparent").unwrap());
    span_of_trace(&second, &trace).await;
    assert!(first.spans().iter().all(|s| s.trace_id() != trace));
}

/// The time of one call, which must succeed.
async fn timed_call(env: &Env, ch: &tonic::transport::Channel) -> Duration {
    let t = Instant::now();
    client::orders(ch.clone())
        .get(Request::default())
        .await
        .unwrap_or_else(|e| panic!("call failed: {e}; log:\n{}", env.gw.log_text()));
    t.elapsed()
}

/// A collector that stopped (connections refused) or hangs (accepts, never
/// answers): calls succeed as fast as ever, and the lost spans are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_silent_collector_never_slows_a_call() {
    // Each call is bounded below the exporter's timeout (2 s): a call that
    // waited on the collector would fail it, with room for a loaded machine.
    const BOUND: Duration = Duration::from_secs(1);

    let rx = OtlpReceiver::start_grpc().await.unwrap();
    let env = start(
        "trace-dead",
        &tracing_section(&rx.endpoint(), "  sample_ratio: 1.0\n  queue_size: 4\n"),
    )
    .await;
    let ch = env.web_channel().await;
    let md = get(&env, &[]).await;
    let (trace, _, _) = fields(md.get("traceparent").unwrap());
    span_of_trace(&rx, &trace).await;
    let dead = rx.endpoint();
    rx.stop().await;

    for _ in 0..20 {
        let took = timed_call(&env, &ch).await;
        assert!(took < BOUND, "a call took {took:?} with the collector down");
    }
    assert!(
        env.metric_reaching(
            "ztgate_trace_spans_dropped_total",
            &[("reason", "export_failed")],
            1.0
        )
        .await
            >= 1.0,
        "{}",
        env.gw.admin_get("/metrics").unwrap().1
    );
    assert!(env.gw.log_text().contains("trace export failed"));

    // Now a collector that accepts and never answers: the export thread
    // waits out its timeout while the 4-span queue fills and overflows.
    let silent = SilentCollector::start().await.unwrap();
    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    std::fs::write(&env.gw.config, text.replace(&dead, &silent.endpoint())).unwrap();
    signal(env.gw.pid(), "-HUP");
    env.metric_reaching("ztgate_config_reloads_total", &[("result", "ok")], 1.0)
        .await;
    let mut slowest = Duration::ZERO;
    let overflowed = eventually(Duration::from_secs(20), async || {
        for _ in 0..10 {
            slowest = slowest.max(timed_call(&env, &ch).await);
        }
        env.metric(
            "ztgate_trace_spans_dropped_total",
            &[("reason", "queue_full")],
        ) >= 1.0
    })
    .await;
    assert!(overflowed, "{}", env.gw.admin_get("/metrics").unwrap().1);
    assert!(
        slowest < BOUND,
        "a call took {slowest:?} with a silent collector"
    );
}

/// OTLP/HTTP (protobuf) reaches an HTTP receiver, headers included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_over_otlp_http() {
    let rx = OtlpReceiver::start_http().await.unwrap();
    let env = start(
        "trace-http",
        &tracing_section(&rx.endpoint(), "  sample_ratio: 1.0\n")
            .replace("    timeout: 2s\n", "    timeout: 2s\n    protocol: http\n"),
    )
    .await;
    let md = get(&env, &[]).await;
    let (trace, parent, _) = fields(md.get("traceparent").unwrap());
    let span = span_of_trace(&rx, &trace).await;
    assert_eq!(span.span_id(), parent);
    assert_eq!(span.service_name.as_deref(), Some("ztgate-e2e"));
    assert_eq!(
        rx.exports()[0].get("x-api-key").map(String::as_str),
        Some("e2e-key")
    );
}

/// `ztgate check` names each bad `tracing:` key.
#[test]
fn check_names_bad_tracing_keys() {
    let dir = support::workdir("trace-check");
    let ca = ztgate_testkit::pki::Ca::new("acme.test").unwrap();
    ca.write(&dir, "ca").unwrap();
    ca.server().unwrap().write(&dir, "server").unwrap();
    let yaml = format!(
        "listener:\n  address: 127.0.0.1:8443\n  tls: {{ cert: server.pem, key: server-key.pem, client_ca: ca.pem }}\n{PIPELINE}routes:\n  - name: orders\n    match: {{ grpc: \"orders.v1.Orders\" }}\n    select: [{{ upstream: orders }}]\nupstreams:\n  orders:\n    backends: [\"127.0.0.1:50051\"]\ntracing:\n  otlp:\n    endpoint: collector:4317\n    protocol: grpc\n  sample_ratio: 2\n"
    );
    let f = dir.join("ztgate.yaml");
    std::fs::write(&f, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .arg("check")
        .arg("-c")
        .arg(&f)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(
            ":17: tracing.otlp.endpoint: `collector:4317` must start with http:// or https://"
        ),
        "{text}"
    );
    assert!(
        text.contains(":19: tracing.sample_ratio: must be between 0 and 1, not 2"),
        "{text}"
    );
}

/// SIGTERM right after a call: the process exits before the exporter's
/// 1 s batch delay, and the call's span is still sent (flushed at exit,
/// within the grace period).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_the_last_calls_are_sent_at_exit() {
    let rx = OtlpReceiver::start_grpc().await.unwrap();
    let env = start(
        "trace-exit",
        &tracing_section(&rx.endpoint(), "  sample_ratio: 1.0\n"),
    )
    .await;
    let md = get(&env, &[]).await;
    let (trace, _, _) = fields(md.get("traceparent").unwrap());
    let pid = env.gw.pid();
    signal(pid, "-TERM");
    let gone = eventually(Duration::from_secs(10), async || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    })
    .await;
    assert!(gone, "still running after SIGTERM:\n{}", env.gw.log_text());
    span_of_trace(&rx, &trace).await;
}
