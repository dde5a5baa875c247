//! The W3C context rules without a network: what the upstream receives for
//! each kind of client context and sampling ratio. (Export is tested end
//! to end in `tests/e2e_tracing.rs` against a real OTLP receiver.)

use super::hop::{client_context, ip_text, rpc_parts, well_formed};
use super::*;
use opentelemetry::trace::Span as _;
use std::net::IpAddr;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// Settings whose exporter points at a closed loopback port: nothing is
/// dialled until a sampled span ends.
fn settings(ratio: f64) -> Settings {
    let raw: TracingSection = serde_yaml::from_str(&format!(
        "otlp: {{ endpoint: \"http://127.0.0.1:9\", timeout: 100ms }}\nsample_ratio: {ratio}\n"
    ))
    .unwrap();
    config::check(&raw, "tracing").unwrap()
}

fn tracing(ratio: f64) -> Tracing {
    let t = Tracing::default();
    t.apply(Some(&settings(ratio))).unwrap();
    t
}

fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

/// `00-<trace>-<span>-<flags>` split in its fields.
fn fields(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    assert_eq!(p[0], "00", "{tp}");
    (p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
}

fn hop(t: &Tracing, h: &http::HeaderMap) -> Hop {
    t.start(h, SystemTime::now()).unwrap()
}

#[test]
fn off_means_no_span() {
    let t = Tracing::default();
    assert!(t.start(&headers(&[]), SystemTime::now()).is_none());
    let on = tracing(1.0);
    on.apply(None).unwrap();
    assert!(on.start(&headers(&[]), SystemTime::now()).is_none());
}

/// A sampled client context is continued: same trace, the gateway span as
/// the new parent, sampled, and the client's tracestate passed on — even
/// at ratio 0 (parent-based sampling).
#[test]
fn a_sampled_client_context_is_continued() {
    for ratio in [0.0, 1.0] {
        let h = headers(&[
            ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
            ("tracestate", "vendor=abc,other=1"),
        ]);
        let hop = hop(&tracing(ratio), &h);
        assert!(hop.recording(), "ratio {ratio}");
        let (trace, span, flags) = fields(&hop.traceparent());
        assert_eq!(trace, TRACE);
        assert_ne!(span, PARENT);
        assert_eq!(span, hop.span.span_context().span_id().to_string());
        let sc = hop.span.span_context();
        assert_eq!(
            hop.traceparent(),
            format!("00-{}-{}-01", sc.trace_id(), sc.span_id())
        );
        assert_eq!(flags, "01");
        assert_eq!(hop.tracestate().as_deref(), Some("vendor=abc,other=1"));
    }
}

/// An unsampled client context stays unsampled at ratio 1, and the
/// upstream still gets the trace with the gateway span as parent.
#[test]
fn an_unsampled_client_context_stays_unsampled() {
    let h = headers(&[("traceparent", &format!("00-{TRACE}-{PARENT}-00"))]);
    let hop = hop(&tracing(1.0), &h);
    assert!(!hop.recording());
    let (trace, span, flags) = fields(&hop.traceparent());
    assert_eq!(trace, TRACE);
    assert_ne!(span, PARENT);
    assert_ne!(span, "0000000000000000");
    assert_eq!(flags, "00");
    assert_eq!(hop.tracestate(), None);
}

/// Whatever is wrong with a client's traceparent, it counts as absent: a
/// new trace (sampled at ratio 1), never an error, and its tracestate is
/// not passed on (W3C Trace Context §3.3.1: no tracestate without a valid
/// traceparent).
#[test]
fn a_malformed_traceparent_starts_a_new_trace() {
    let t = tracing(1.0);
    for bad in [
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    ] {
        let h = headers(&[("traceparent", bad), ("tracestate", "vendor=abc")]);
        let hop = hop(&t, &h);
        assert!(hop.recording(), "{bad:?}");
        let (trace, _, flags) = fields(&hop.traceparent());
        assert_ne!(trace, TRACE, "{bad:?}");
        assert_ne!(trace, "00000000000000000000000000000000", "{bad:?}");
        assert_eq!(flags, "01", "{bad:?}");
        assert_eq!(hop.tracestate(), None, "{bad:?}");
    }
}

/// Without a client context: a new trace each time, sampled by the ratio;
/// at 0 nothing is recorded but the upstream still gets a valid context.
#[test]
fn new_traces_follow_the_ratio() {
    let never = tracing(0.0);
    let always = tracing(1.0);
    let a = hop(&always, &headers(&[]));
    let b = hop(&always, &headers(&[]));
    assert!(a.recording() && b.recording());
    assert_ne!(fields(&a.traceparent()).0, fields(&b.traceparent()).0);
    let n = hop(&never, &headers(&[]));
    assert!(!n.recording());
    let (trace, span, flags) = fields(&n.traceparent());
    assert_ne!(trace, "00000000000000000000000000000000");
    assert_ne!(span, "0000000000000000");
    assert_eq!(flags, "00");
}

/// Equal settings keep the pipeline; a change replaces it.
#[test]
fn a_reload_keeps_or_replaces_the_pipeline() {
    let t = tracing(1.0);
    let first = t.current.load_full().unwrap();
    t.apply(Some(&settings(1.0))).unwrap();
    assert!(Arc::ptr_eq(&first, &t.current.load_full().unwrap()));
    t.apply(Some(&settings(0.5))).unwrap();
    assert!(!Arc::ptr_eq(&first, &t.current.load_full().unwrap()));
}

#[test]
fn traceparent_shapes() {
    let ok = format!("00-{TRACE}-{PARENT}-01");
    assert!(well_formed(&ok));
    assert!(well_formed(&format!("01-{TRACE}-{PARENT}-01")));
    assert!(well_formed(&format!("01-{TRACE}-{PARENT}-01-later")));
    assert!(!well_formed(&format!("00-{TRACE}-{PARENT}-01-later")));
    assert!(!well_formed(&format!("ff-{TRACE}-{PARENT}-01")));
    assert!(!well_formed(&ok[..54]));
    assert!(!well_formed(&ok.replace('-', "_")));
    assert!(!well_formed(&ok.to_uppercase()));
    assert!(!well_formed("00-\u{e9}"));
}

#[test]
fn addresses_as_text() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "10.20.3.255",
        "192.168.100.9",
        "::1",
        "2001:db8::7",
    ] {
        let parsed: IpAddr = ip.parse().unwrap();
        assert_eq!(ip_text(parsed), ip);
    }
    // A v4-mapped peer of a dual-stack listener reads as its IPv4 address.
    assert_eq!(ip_text("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3");
}

/// The SDK's propagator reading the same headers: the reference our own
/// parser must agree with.
fn sdk_context(h: &http::HeaderMap) -> opentelemetry::trace::SpanContext {
    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    struct H<'a>(&'a http::HeaderMap);
    impl Extractor for H<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&H(h));
    cx.span().span_context().clone()
}

/// Our `traceparent`/`tracestate` reading gives what the SDK's W3C
/// propagator gives, on valid and invalid input alike — except two shapes
/// the SDK lets through and the spec does not (`well_formed`).
#[test]
fn the_context_parser_agrees_with_the_sdk() {
    use opentelemetry::trace::TraceContextExt;
    let tp = |v: &str, f: &str| format!("{v}-{TRACE}-{PARENT}-{f}");
    let mut cases: Vec<(String, Option<&str>)> = Vec::new();
    for (v, f) in [
        ("00", "00"),
        ("00", "01"),
        ("00", "02"),
        ("00", "03"),
        ("00", "05"),
        ("00", "ff"),
        ("01", "09"),
        ("fe", "01"),
        ("ff", "01"),
    ] {
        for state in [
            None,
            Some("vendor=abc,other=1"),
            Some("bad state"),
            Some(""),
        ] {
            cases.push((tp(v, f), state));
        }
    }
    for raw in [
        format!("01-{TRACE}-{PARENT}-01-later"),
        format!(" 00-{TRACE}-{PARENT}-01 "),
        format!("00-{}-{PARENT}-01", "0".repeat(32)),
        format!("00-{TRACE}-{}-01", "0".repeat(16)),
        format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
        format!("00-{TRACE}-{PARENT}-0g"),
        "00".to_owned(),
        String::new(),
    ] {
        cases.push((raw, Some("vendor=abc")));
    }
    for (traceparent, state) in &cases {
        let mut pairs = vec![("traceparent", traceparent.as_str())];
        if let Some(s) = state {
            pairs.push(("tracestate", s));
        }
        let h = headers(&pairs);
        let ours = client_context(&h).span().span_context().clone();
        assert_eq!(ours, sdk_context(&h), "{traceparent:?} {state:?}");
    }
    // Where we are stricter, as W3C Trace Context §3.2 is: a 31-digit trace
    // id, and a version-00 header with a trailing `-`.
    for bad in [
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
    ] {
        let h = headers(&[("traceparent", bad)]);
        assert!(sdk_context(&h).is_valid(), "{bad}");
        assert!(
            !client_context(&h).span().span_context().is_valid(),
            "{bad}"
        );
    }
}

#[test]
fn rpc_names() {
    assert_eq!(
        rpc_parts("/orders.v1.Orders/Get"),
        Some(("orders.v1.Orders", "Get"))
    );
    for bad in ["", "/", "/a", "/a/", "//b", "a/b", "/a/b/c"] {
        assert_eq!(rpc_parts(bad), None, "{bad:?}");
    }
}
