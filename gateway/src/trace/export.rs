//! Finished spans leave the request path here: the request thread puts a
//! span into a bounded queue without ever waiting (a full queue drops the
//! span and counts it), and one thread of our own, with a single-threaded
//! tokio runtime, batches the queue and sends it with the OTLP exporter of
//! `opentelemetry-otlp`. A dead collector fails each export fast; a silent
//! one holds the export thread for `otlp.timeout` per batch while the queue
//! fills and drops — in both cases no request waits.
//!
//! Why not the SDK's `BatchSpanProcessor`: in `opentelemetry_sdk` 0.29 it
//! keeps its count of dropped spans private (it only logs it at shutdown),
//! and `PRODUCT.md` wants drops counted. This processor is the same design
//! (a bounded queue, a background thread, batches by size or delay) with
//! the counts exposed as metrics:
//! `ztgate_trace_spans_exported_total` and
//! `ztgate_trace_spans_dropped_total{reason}` (`queue_full`,
//! `export_failed`, `shutdown`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};

use super::config::{Protocol, Settings};
use crate::metrics;

/// Most spans in one export request: the SDK's default
/// (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`), well under a collector's default
/// 4 MiB gRPC message limit for spans of this size (~1 KiB each).
const MAX_BATCH: usize = 512;

/// How long a partial batch waits for more spans. Shorter than the SDK's
/// 5 s: a trace shows up in the backend about a second after the call, and
/// at any real rate batches fill up before it anyway.
const BATCH_DELAY: Duration = Duration::from_secs(1);

/// Why an exporter could not be made (a bad endpoint gets here only if
/// `check` let it through).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot start the export runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("invalid OTLP endpoint: {0}")]
    Endpoint(String),
    #[error("invalid OTLP header `{0}`")]
    Header(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Build(String),
}

/// The [`SpanProcessor`] the tracer provider calls when a span ends.
#[derive(Debug)]
pub(super) struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    control: Arc<Control>,
}

/// Stopping the export thread, shared by the processor (which the tracer
/// provider owns) and the pipeline (which finishes it at exit).
#[derive(Debug)]
pub(super) struct Control {
    /// Tells the export thread to send what is queued and stop.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    /// The export thread, to wait for at exit.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Control {
    fn stop(&self) {
        if let Ok(mut stop) = self.stop.lock() {
            if let Some(tx) = stop.take() {
                let _ = tx.send(());
            }
        }
    }

    /// Stop the export thread and wait, at most `within`, for it to send
    /// what is queued: the spans of the last requests before the process
    /// exits. Whether it finished in time.
    pub(super) fn finish(&self, within: Duration) -> bool {
        self.stop();
        let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) else {
            return true;
        };
        let deadline = std::time::Instant::now() + within;
        while !thread.is_finished() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = thread.join();
        true
    }
}

impl QueueProcessor {
    /// Start the export thread for `settings`; spans carry `resource`.
    pub(super) fn start(settings: &Settings, resource: Resource) -> Result<Self, ExportError> {
        let (queue, rx) = mpsc::channel(settings.queue_size);
        let (stop, stopped) = oneshot::channel();
        let settings = settings.clone();
        // The exporter is built on the export thread's own runtime (the
        // tonic channel's connection task lives there); building it first,
        // before the thread, reports a bad endpoint to the caller.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut exporter = {
            let _in_rt = rt.enter();
            exporter(&settings)?
        };
        exporter.set_resource(&resource);
        let thread = std::thread::Builder::new()
            .name("ztgate-otlp".into())
            .spawn(move || {
                rt.block_on(run(exporter, rx, stopped, &settings));
            })?;
        Ok(Self {
            queue,
            control: Arc::new(Control {
                stop: Mutex::new(Some(stop)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Stopping its export thread, for the pipeline.
    pub(super) fn control(&self) -> Arc<Control> {
        self.control.clone()
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    /// On the request path: never waits.
    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.queue.try_send(span) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::TRACE_SPANS_DROPPED_QUEUE_FULL.inc()
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::TRACE_SPANS_DROPPED_SHUTDOWN.inc()
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Ask the export thread to send what is queued and stop; does not
    /// wait for it (this runs when the last request holding the old
    /// pipeline lets go, on a request thread).
    fn shutdown(&self) -> OTelSdkResult {
        self.control.stop();
        Ok(())
    }
}

/// The OTLP exporter for `settings`; call inside the export runtime.
fn exporter(s: &Settings) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    let built = match s.protocol {
        Protocol::Grpc => {
            let mut endpoint = tonic::transport::Endpoint::from_shared(s.endpoint.clone())
                .map_err(|e| ExportError::Endpoint(e.to_string()))?
                // Bounds the connect too, which the request timeout alone
                // would not for a collector whose SYNs go unanswered.
                .connect_timeout(s.timeout)
                .timeout(s.timeout);
            if s.endpoint.starts_with("https://") {
                let tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| ExportError::Endpoint(e.to_string()))?;
            }
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (name, value) in &s.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
                    .map_err(|_| ExportError::Header(name.clone()))?;
                let value = value
                    .expose()
                    .parse()
                    .map_err(|_| ExportError::Header(name.clone()))?;
                metadata.insert(key, value);
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_channel(endpoint.connect_lazy())
                .with_metadata(metadata)
                .with_timeout(s.timeout)
                .build()
        }
        Protocol::Http => {
            let mut client = reqwest::Client::builder()
                .connect_timeout(s.timeout)
                .timeout(s.timeout);
            if s.endpoint.starts_with("https://") {
                // The same trust as the gRPC exporter's: the system's roots
                // (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured), not the
                // Mozilla set compiled into reqwest's rustls build.
                client = client.tls_built_in_root_certs(false);
                for der in rustls_native_certs::load_native_certs().certs {
                    if let Ok(cert) = reqwest::Certificate::from_der(&der) {
                        client = client.add_root_certificate(cert);
                    }
                }
            }
            let client = client
                .build()
                .map_err(|e| ExportError::Build(e.to_string()))?;
            let headers = s
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(s.endpoint.clone())
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(client)
                .with_headers(headers)
                .with_timeout(s.timeout)
                .build()
        }
    };
    built.map_err(|e| ExportError::Build(e.to_string()))
}

/// The export thread: gather up to [`MAX_BATCH`] spans or for
/// [`BATCH_DELAY`], export, repeat; on stop, export what is queued and end.
async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    mut stop: oneshot::Receiver<()>,
    settings: &Settings,
) {
    let mut stopping = false;
    let mut failing = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop, if !stopping => {
                // A dropped sender (the processor gone without shutdown)
                // means the same.
                stopping = true;
                rx.close();
                continue;
            }
            n = rx.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    // Closed and empty: every span was exported or counted.
                    return;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while !stopping && batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                biased;
                _ = &mut stop => {
                    stopping = true;
                    rx.close();
                }
                n = rx.recv_many(&mut batch, room) => {
                    if n == 0 {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        export(
            &exporter,
            std::mem::take(&mut batch),
            settings,
            &mut failing,
        )
        .await;
        batch.reserve(MAX_BATCH);
    }
}

/// Send one batch, bounded by `otlp.timeout` (plus a little for the
/// exporter's own timeout to fire first), and count it either way. A
/// failure is logged when exports start failing and when they recover,
/// not per batch.
async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: Vec<SpanData>,
    settings: &Settings,
    failing: &mut bool,
) {
    let n = batch.len() as u64;
    let limit = settings.timeout + Duration::from_millis(100);
    let result = match tokio::time::timeout(limit, exporter.export(batch)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    };
    match result {
        Ok(()) => {
            metrics::TRACE_SPANS_EXPORTED.inc_by(n);
            if *failing {
                *failing = false;
                tracing::info!(endpoint = %settings.endpoint, "trace export recovered");
            }
        }
        Err(error) => {
            metrics::TRACE_SPANS_DROPPED_EXPORT_FAILED.inc_by(n);
            if !*failing {
                *failing = true;
                tracing::warn!(
                    endpoint = %settings.endpoint,
                    %error,
                    "trace export failed; spans are dropped (ztgate_trace_spans_dropped_total) until it recovers"
                );
            }
        }
    }
}
