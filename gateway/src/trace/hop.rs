//! The per-request half of tracing: the client's W3C context read from
//! the request headers, the gateway span started from it, the filters'
//! verdicts as events, the `traceparent` for the upstream, and the span's
//! end with how the request ended. Depends on the OpenTelemetry API/SDK,
//! `http` and `ztgate-filter` only, so that the per-call cost benchmark
//! (`load-tests/trace-cost`) runs this very file.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use std::str::FromStr as _;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use ztgate_filter::{Decision, FilterVerdict};

/// Whether `tp` has the shape of a `traceparent` (W3C Trace Context §3.2):
/// `version-traceid-parentid-flags` in lowercase hex of exactly 2, 32, 16
/// and 2 digits, version `ff` refused, nothing after the flags in version
/// `00` (a later version may append `-…`). Stricter than the SDK's
/// propagator, which reads the fields as numbers (a 31-digit trace id
/// passes) and ignores a trailing `-`.
pub(crate) fn well_formed(tp: &str) -> bool {
    let b = tp.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b.get(r).is_some_and(|s| {
            s.iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        })
    };
    let dash = |i: usize| b.get(i) == Some(&b'-');
    let fields =
        hex(0..2) && dash(2) && hex(3..35) && dash(35) && hex(36..52) && dash(52) && hex(53..55);
    let tail = match b.get(0..2) {
        Some(b"00") => b.len() == 55,
        Some(b"ff") => false,
        _ => b.len() == 55 || dash(55),
    };
    fields && tail
}

/// The client's trace context from `headers`: the parent of the gateway
/// span, or an empty context (a new trace) when there is none or it does
/// not parse.
pub(crate) fn client_context(headers: &http::HeaderMap) -> Context {
    match remote_context(headers) {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

/// The client's `traceparent` (and `tracestate`) as a remote span context.
/// Read here rather than by the SDK's `TraceContextPropagator`, whose rules
/// it keeps (version `00` with flags above `02` refused, all-zero ids
/// refused, an invalid `tracestate` read as empty; a test holds the two
/// equal) but which allocates for every parse: a client's unsampled
/// `traceparent` cost ~3,400 instructions per call through it (callgrind,
/// `load-tests/trace-cost`), a common case in a mesh.
fn remote_context(headers: &http::HeaderMap) -> Option<SpanContext> {
    let tp = headers.get("traceparent")?.to_str().ok()?.trim();
    if !well_formed(tp) {
        return None;
    }
    let b = tp.as_bytes();
    let [version] = hex::<1>(b.get(0..2)?)?;
    let trace_id = TraceId::from_bytes(hex::<16>(b.get(3..35)?)?);
    let span_id = SpanId::from_bytes(hex::<8>(b.get(36..52)?)?);
    let [flags] = hex::<1>(b.get(53..55)?)?;
    if version == 0 && flags > 2 {
        return None;
    }
    let state = headers
        .get("tracestate")
        .and_then(|v| v.to_str().ok())
        .map(|v| TraceState::from_str(v).unwrap_or_default())
        .unwrap_or_default();
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    );
    sc.is_valid().then_some(sc)
}

/// `N` bytes from `2N` lowercase hex digits.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = (nibble(*hi)? << 4) | nibble(*lo)?;
    }
    Some(out)
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`), for the RPC
/// semantic-convention attributes; `None` for anything else.
pub(crate) fn rpc_parts(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// The name of a span before the request is routed. The span is renamed
/// `pkg.Service/Method` (the RPC semantic conventions' name) once a route
/// accepted the path, so names stay as few as the routes for anything a
/// client can make up.
const UNROUTED: &str = "ztgate";

/// One request's gateway span.
pub struct Hop {
    pub(crate) span: opentelemetry_sdk::trace::Span,
}

/// How the request ended, for [`Hop::finish`].
pub struct End<'a> {
    pub path: &'a str,
    pub route: &'a str,
    pub upstream: &'a str,
    /// The backend the call went to last, if any.
    pub backend: Option<SocketAddr>,
    pub decision: &'a str,
    pub reason: &'a str,
    /// The call's gRPC status (the gateway's own for a refusal).
    pub grpc_status: Option<u8>,
    /// Whether the gateway failed the call (`decision` `error`): the span's
    /// status is then ERROR, as for a server-side gRPC failure.
    pub failed: bool,
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
}

impl Hop {
    /// Start the span of a request with `headers`, received at `start`,
    /// under the client's context if it sent a valid one.
    pub(crate) fn start(tracer: &SdkTracer, headers: &http::HeaderMap, start: SystemTime) -> Self {
        let parent = client_context(headers);
        // No attributes yet: the sampler does not read them, and an
        // unsampled span would only allocate them to drop them (the RPC
        // ones are set in `finish`).
        let span = tracer
            .span_builder(UNROUTED)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .start_with_context(tracer, &parent);
        Self { span }
    }

    /// Whether this span is sampled (recorded and exported); an unsampled
    /// span still has a context to pass upstream.
    pub fn recording(&self) -> bool {
        self.span.is_recording()
    }

    /// One event per filter that ran: its name, verdict (`continue`,
    /// `deny`, `shadow_deny`) and, for a refusal, the reason.
    pub fn verdicts(&mut self, verdicts: &[FilterVerdict]) {
        if !self.recording() {
            return;
        }
        for v in verdicts {
            let (verdict, reason) = match &v.decision {
                Decision::Continue => ("continue", None),
                Decision::Deny(d) => ("deny", Some(d.reason.as_str())),
                Decision::ShadowDeny(d) => ("shadow_deny", Some(d.reason.as_str())),
            };
            let mut attributes = vec![
                KeyValue::new("ztgate.filter", v.filter),
                KeyValue::new("ztgate.verdict", verdict),
                KeyValue::new(
                    "ztgate.filter.duration_us",
                    i64::try_from(v.elapsed.as_micros()).unwrap_or(i64::MAX),
                ),
            ];
            if let Some(r) = reason {
                attributes.push(KeyValue::new("ztgate.reason", r));
            }
            self.span.add_event(v.filter, attributes);
        }
    }

    /// The `traceparent` for the upstream: this span as the parent
    /// (W3C Trace Context §3.2, version 00).
    /// Written digit by digit rather than with `format!`: it is on every
    /// traced request, sampled or not, and the formatting machinery was
    /// over half of an unsampled call's tracing cost (callgrind, see
    /// `load-tests/trace-cost`).
    pub fn traceparent(&self) -> String {
        let sc = self.span.span_context();
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &sc.trace_id().to_bytes());
        out.push('-');
        push_hex(&mut out, &sc.span_id().to_bytes());
        out.push_str(if sc.is_sampled() { "-01" } else { "-00" });
        out
    }

    /// The client's `tracestate`, passed on unchanged (`None` when empty).
    pub fn tracestate(&self) -> Option<String> {
        let state = self.span.span_context().trace_state().header();
        (!state.is_empty()).then_some(state)
    }

    /// Record how the request ended and end the span (queued for export
    /// when sampled).
    pub fn finish(mut self, end: End<'_>, at: SystemTime) {
        if self.recording() {
            let mut attributes = Vec::with_capacity(14);
            if let Some((service, method)) = rpc_parts(end.path) {
                if !end.route.is_empty() {
                    self.span
                        .update_name(Cow::Owned(format!("{service}/{method}")));
                }
                attributes.push(KeyValue::new("rpc.system", "grpc"));
                attributes.push(KeyValue::new("rpc.service", service.to_owned()));
                attributes.push(KeyValue::new("rpc.method", method.to_owned()));
            }
            let mut put = |k: &'static str, v: &str| {
                if !v.is_empty() {
                    attributes.push(KeyValue::new(k, v.to_owned()));
                }
            };
            put("ztgate.route", end.route);
            put("ztgate.upstream", end.upstream);
            put("ztgate.decision", end.decision);
            put("ztgate.reason", end.reason);
            put("ztgate.request_id", end.request_id);
            if let Some(ip) = end.client_ip {
                attributes.push(KeyValue::new("client.address", ip_text(ip)));
            }
            if let Some(b) = end.backend {
                attributes.push(KeyValue::new("server.address", ip_text(b.ip())));
                attributes.push(KeyValue::new("server.port", i64::from(b.port())));
            }
            if let Some(code) = end.grpc_status {
                attributes.push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
            }
            self.span.set_attributes(attributes);
            if end.failed {
                let why = if end.reason.is_empty() {
                    "gateway error"
                } else {
                    end.reason
                };
                self.span.set_status(Status::error(why.to_owned()));
            }
        }
        self.span.end_with_timestamp(at);
    }
}

/// An address as text. IPv4 digit by digit: `Ipv4Addr`'s `Display` pads
/// through the formatting machinery and was a fifth of a sampled call's
/// tracing cost (two addresses per span; callgrind, `load-tests/trace-cost`).
pub(crate) fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip.to_canonical() else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let (h, t, u) = (octet / 100, octet / 10 % 10, octet % 10);
        for (digit, show) in [(h, h > 0), (t, h > 0 || t > 0), (u, true)] {
            if show {
                out.push(char::from(b'0' + digit));
            }
        }
    }
    out
}

/// Lowercase hex of `bytes`, appended to `out`.
fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
}

/// The span's start from the request's monotonic start: the wall clock now
/// less the time since.
pub fn started_at(elapsed: Duration) -> SystemTime {
    let now = SystemTime::now();
    now.checked_sub(elapsed).unwrap_or(now)
}
