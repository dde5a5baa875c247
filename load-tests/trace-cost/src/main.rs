//! What tracing adds to one call on the gateway's request path, off and on
//! (sampled 1 % and 100 %, and with a client context sampled or not) side
//! by side in one run.
//!
//! The measured call is the gateway's own code (`gateway/src/trace/hop.rs`,
//! included below): read the client's W3C context from the headers, start
//! the span (sampler, ids), add the three filter verdicts of a
//! `sanitize, mtls, route` pipeline as events, format the upstream's
//! `traceparent`/`tracestate`, set the end attributes and end the span. A
//! sampled span then goes to a span processor that does what the gateway's
//! does on the request path (`export.rs` `QueueProcessor::on_end`: a
//! `try_send` into a bounded tokio channel); another thread drains the
//! channel, standing in for the export thread, which is off the request
//! path and not measured. The channel holds a whole round's spans, so that
//! every sampled call pays for a successful enqueue even when the stand-in
//! thread gets little CPU (a full queue's drop is the cheaper path, and
//! would flatter the figure). "off" is what a request costs without a
//! `tracing:` section: the one atomic load of `Tracing::start`.
//!
//! ```text
//! cargo run --release -p ztgate-trace-cost -- [CALLS [ROUNDS [MODE|all [encode]]]]
//!     # wall clock, ns/call; `encode`: the export stand-in encodes OTLP too
//! valgrind --tool=callgrind --toggle-collect='*measured_call*' \
//!     target/release/ztgate-trace-cost 20000 1 MODE           # request path: totals ÷ calls
//! valgrind --tool=callgrind --toggle-collect='*export_side*' \
//!     target/release/ztgate-trace-cost 20000 1 sampled-100% encode   # export: totals ÷ spans
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

#[allow(dead_code)]
#[path = "../../../gateway/src/trace/hop.rs"]
mod hop;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanProcessor,
};
use tokio::sync::mpsc;
use ztgate_filter::{Decision, FilterVerdict, Mode};

/// As in the gateway (`gateway/src/main.rs`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Spans counted per case: dropped (queue full), enqueued, and encoded by
/// the export stand-in, with the encoded bytes.
#[derive(Debug, Default)]
struct Counts {
    dropped: AtomicU64,
    enqueued: AtomicU64,
    encoded: AtomicU64,
    bytes: AtomicU64,
    /// Wall time in `export_side`.
    export_ns: AtomicU64,
}

/// `QueueProcessor::on_end` of `gateway/src/trace/export.rs`, minus the
/// Prometheus counters (counted in atomics here).
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<SpanData>,
    counts: Arc<Counts>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}
    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(span) {
            Ok(()) => self.counts.enqueued.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counts.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown(&self) -> OTelSdkResult {
        Ok(())
    }
}

/// A tracer like the gateway's (parent-based ratio sampler) feeding a
/// queue that a thread drains and encodes as the exporter would.
/// The tracer, its provider and its counts.
type Traced = (SdkTracer, SdkTracerProvider, Arc<Counts>);

fn tracer(ratio: f64, queue: usize, encode: bool) -> Traced {
    let (tx, mut rx) = mpsc::channel::<SpanData>(queue);
    let counts = Arc::new(Counts::default());
    let drained = counts.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name("ztgate")
            .build();
        let resource = (&resource).into();
        rt.block_on(async move {
            let mut batch = Vec::with_capacity(512);
            while rx.recv_many(&mut batch, 512).await > 0 {
                let spans = batch.len() as u64;
                if !encode {
                    batch.clear();
                    drained.encoded.fetch_add(spans, Ordering::Relaxed);
                    continue;
                }
                let t = Instant::now();
                let n = export_side(std::mem::take(&mut batch), &resource);
                let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                drained.export_ns.fetch_add(ns, Ordering::Relaxed);
                drained.bytes.fetch_add(n as u64, Ordering::Relaxed);
                drained.encoded.fetch_add(spans, Ordering::Relaxed);
            }
        });
    });
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Queue {
            tx,
            counts: counts.clone(),
        })
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .build();
    (provider.tracer("ztgate"), provider, counts)
}

fn verdicts() -> Vec<FilterVerdict> {
    ["sanitize", "mtls", "route"]
        .into_iter()
        .map(|filter| FilterVerdict {
            filter,
            mode: Mode::Enforce,
            decision: Decision::Continue,
            elapsed: Duration::from_micros(3),
        })
        .collect()
}

/// The export thread's work for one batch short of the network write, as
/// `opentelemetry-otlp` 0.29 does it (`TonicTracesClient::export`: group by
/// resource and scope, then the protobuf encoding of the request); returns
/// the encoded size. Off the request path: measured apart (callgrind
/// `--toggle-collect='*export_side*'`).
#[inline(never)]
fn export_side(
    batch: Vec<SpanData>,
    resource: &opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema,
) -> usize {
    use prost::Message;
    let resource_spans =
        opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope(
            batch, resource,
        );
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest { resource_spans }
        .encode_to_vec()
        .len()
}

/// One request's tracing work, as `proxy.rs` does it (`None`: tracing off).
#[inline(never)]
fn measured_call(
    tracer: Option<&SdkTracer>,
    on: &AtomicBool,
    headers: &http::HeaderMap,
    verdicts: &[FilterVerdict],
    started: Instant,
) {
    if !on.load(Ordering::Acquire) {
        return;
    }
    let Some(tracer) = tracer else { return };
    let path = "/orders.v1.Orders/Get";
    let mut h = hop::Hop::start(tracer, headers, hop::started_at(started.elapsed()));
    h.verdicts(verdicts);
    black_box(h.traceparent());
    black_box(h.tracestate());
    h.finish(
        hop::End {
            path,
            route: "orders",
            upstream: "orders",
            backend: Some(([127, 0, 0, 1], 50051).into()),
            decision: "allow",
            reason: "",
            grpc_status: Some(0),
            failed: false,
            request_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            client_ip: Some([127, 0, 0, 1].into()),
        },
        SystemTime::now(),
    );
}

struct Case {
    name: &'static str,
    tracer: Option<Traced>,
    headers: http::HeaderMap,
}

fn cases(queue: usize, encode: bool) -> Vec<Case> {
    let mut client = http::HeaderMap::new();
    client.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    client.insert("tracestate", "vendor=abc".parse().unwrap());
    let mut unsampled = http::HeaderMap::new();
    unsampled.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
            .parse()
            .unwrap(),
    );
    vec![
        Case {
            name: "off",
            tracer: None,
            headers: http::HeaderMap::new(),
        },
        Case {
            name: "sampled-1%",
            tracer: Some(tracer(0.01, queue, encode)),
            headers: http::HeaderMap::new(),
        },
        Case {
            name: "sampled-100%",
            tracer: Some(tracer(1.0, queue, encode)),
            headers: http::HeaderMap::new(),
        },
        Case {
            name: "client-sampled",
            tracer: Some(tracer(0.01, queue, encode)),
            headers: client,
        },
        Case {
            name: "client-unsampled",
            tracer: Some(tracer(0.01, queue, encode)),
            headers: unsampled,
        },
    ]
}

fn run(case: &Case, calls: u64, verdicts: &[FilterVerdict]) -> Duration {
    let on = AtomicBool::new(case.tracer.is_some());
    let tracer = case.tracer.as_ref().map(|t| &t.0);
    let t = Instant::now();
    for _ in 0..calls {
        measured_call(tracer, &on, &case.headers, verdicts, t);
    }
    t.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let calls: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(7);
    let only = args.get(3).cloned().filter(|m| m != "all");
    // The export stand-in encodes as the OTLP exporter does only when
    // asked: it competes for the CPUs with the measured thread.
    let encode = args.get(4).is_some_and(|a| a == "encode");
    let verdicts = verdicts();
    let cases: Vec<Case> = cases(usize::try_from(calls).unwrap_or(usize::MAX), encode)
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| o == c.name))
        .collect();
    // Rounds interleave the cases, so a busy neighbour slows them alike;
    // the median round is reported.
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, c) in cases.iter().enumerate() {
            let d = run(c, calls, &verdicts);
            times[i].push(d.as_nanos() as f64 / calls as f64);
        }
    }
    // Let the export stand-in finish (bounded), so that its figures are
    // whole and a callgrind run has every batch encoded before exit.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60)
        && cases
            .iter()
            .filter_map(|c| c.tracer.as_ref())
            .any(|t| t.2.encoded.load(Ordering::Relaxed) < t.2.enqueued.load(Ordering::Relaxed))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("calls per round: {calls}, rounds: {rounds} (median round shown)");
    println!(
        "| mode | ns/call (median) | min | max | spans exported | dropped (queue full) | OTLP bytes/span | export ns/span |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (c, t) in cases.iter().zip(times.iter_mut()) {
        t.sort_by(|a, b| a.total_cmp(b));
        let median = t[t.len() / 2];
        let (encoded, dropped, bytes, export) = c.tracer.as_ref().map_or((0, 0, 0, 0), |t| {
            let n = t.2.encoded.load(Ordering::Relaxed);
            (
                n,
                t.2.dropped.load(Ordering::Relaxed),
                t.2.bytes.load(Ordering::Relaxed) / n.max(1),
                t.2.export_ns.load(Ordering::Relaxed) / n.max(1),
            )
        });
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |",
            c.name,
            median,
            t[0],
            t[t.len() - 1],
            encoded,
            dropped,
            bytes,
            export
        );
    }
}
