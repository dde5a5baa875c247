//! OpenTelemetry tracing of the gateway hop (PRODUCT.md "Tracing").
//!
//! Each request gets one `SERVER` span, a child of the client's W3C trace
//! context (`traceparent`/`tracestate`, continued as sent; a malformed
//! `traceparent` counts as none) or the root of a new trace. Sampling is
//! parent-based: a client's sampled flag is followed either way, and new
//! traces are sampled by `tracing.sample_ratio`. The span carries the
//! route, upstream, decision, reason and gRPC status as attributes and each
//! filter's verdict as an event; the upstream receives a `traceparent`
//! whose parent is this span (sampled flag as decided, so an unsampled call
//! still passes a consistent context on) and the client's `tracestate`.
//!
//! Spans leave the request path through a bounded queue to an export
//! thread ([`export`]); nothing on the request path waits for the
//! collector. With no `tracing:` section, a request costs one atomic load
//! and the client's headers pass through untouched, as before.
//!
//! A reload applies a changed `tracing:` section (endpoint, protocol,
//! headers, ratio, queue): a new exporter starts, requests already started
//! finish on the old one, which then sends what it has queued and stops.

pub mod config;
mod export;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use ztgate_filter::{Decision, FilterVerdict};

pub use config::{Settings, TracingSection};
pub use export::ExportError;

/// The tracing of the process: off, or one pipeline (exporter, sampler)
/// built from the `tracing:` settings in force.
#[derive(Default)]
pub struct Tracing {
    /// Checked first on every request, so tracing off costs one load.
    on: AtomicBool,
    current: ArcSwapOption<Pipeline>,
}

/// One exporter and the tracer that feeds it.
struct Pipeline {
    settings: Settings,
    tracer: SdkTracer,
    /// Kept so that the provider lives (and exports) while this pipeline is
    /// in force; requests in flight hold it through their spans.
    _provider: SdkTracerProvider,
}

impl Tracing {
    /// Put `settings` in force (`None`: tracing off). Equal settings keep
    /// the running exporter; changed ones start a new one, and the old one
    /// ends once the requests that started on it are done. On an error the
    /// previous state stays and the error is returned for the log.
    pub fn apply(&self, settings: Option<&Settings>) -> Result<(), ExportError> {
        let Some(settings) = settings else {
            self.on.store(false, Ordering::Release);
            self.current.store(None);
            return Ok(());
        };
        if self
            .current
            .load()
            .as_ref()
            .is_some_and(|p| &p.settings == settings)
        {
            return Ok(());
        }
        let pipeline = Pipeline::start(settings)?;
        self.current.store(Some(Arc::new(pipeline)));
        self.on.store(true, Ordering::Release);
        Ok(())
    }

    /// Start the gateway span of a request whose headers are `headers`,
    /// received at `start`; `None` when tracing is off.
    pub fn start(&self, headers: &http::HeaderMap, path: &str, start: SystemTime) -> Option<Hop> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let pipeline = self.current.load_full()?;
        Some(Hop::start(&pipeline.tracer, headers, path, start))
    }
}

impl Pipeline {
    fn start(settings: &Settings) -> Result<Self, ExportError> {
        let resource = Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let processor = export::QueueProcessor::start(settings, resource.clone())?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("ztgate");
        Ok(Self {
            settings: settings.clone(),
            tracer,
            _provider: provider,
        })
    }
}

/// The request's headers as the W3C propagator reads them.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    /// The first value; one that is not visible ASCII counts as absent, and
    /// so does a `traceparent` that is not well-formed (see
    /// [`well_formed`]), which makes the propagator start a new trace and
    /// ignore `tracestate`.
    fn get(&self, key: &str) -> Option<&str> {
        let v = self.0.get(key).and_then(|v| v.to_str().ok())?;
        if key == "traceparent" && !well_formed(v.trim()) {
            return None;
        }
        Some(v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Whether `tp` has the shape of a `traceparent` (W3C Trace Context §3.2):
/// `version-traceid-parentid-flags` in lowercase hex of exactly 2, 32, 16
/// and 2 digits, version `ff` refused, nothing after the flags in version
/// `00` (a later version may append `-…`). The SDK's parser reads the
/// fields as numbers and so accepts a 31-digit trace id; this is checked
/// first.
fn well_formed(tp: &str) -> bool {
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
fn client_context(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`), for the RPC
/// semantic-convention attributes; `None` for anything else.
fn rpc_parts(path: &str) -> Option<(&str, &str)> {
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
    span: opentelemetry_sdk::trace::Span,
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
    fn start(tracer: &SdkTracer, headers: &http::HeaderMap, path: &str, start: SystemTime) -> Self {
        let parent = client_context(headers);
        let mut attributes = Vec::with_capacity(3);
        if let Some((service, method)) = rpc_parts(path) {
            attributes.push(KeyValue::new("rpc.system", "grpc"));
            attributes.push(KeyValue::new("rpc.service", service.to_owned()));
            attributes.push(KeyValue::new("rpc.method", method.to_owned()));
        }
        let span = tracer
            .span_builder(UNROUTED)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attributes)
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
    pub fn traceparent(&self) -> String {
        let sc = self.span.span_context();
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8() & 1
        )
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
            if !end.route.is_empty() {
                if let Some((service, method)) = rpc_parts(end.path) {
                    self.span
                        .update_name(Cow::Owned(format!("{service}/{method}")));
                }
            }
            let mut attributes = Vec::with_capacity(10);
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
                attributes.push(KeyValue::new("client.address", ip.to_string()));
            }
            if let Some(b) = end.backend {
                attributes.push(KeyValue::new("server.address", b.ip().to_string()));
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

/// The span's start from the request's monotonic start: the wall clock now
/// less the time since.
pub fn started_at(elapsed: Duration) -> SystemTime {
    let now = SystemTime::now();
    now.checked_sub(elapsed).unwrap_or(now)
}

#[cfg(test)]
mod tests;
