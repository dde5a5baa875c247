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
mod hop;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

pub use config::{Settings, TracingSection};
pub use export::ExportError;
pub use hop::{started_at, End, Hop};

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
    /// Its export thread, finished at exit.
    export: Arc<export::Control>,
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

    /// At exit, after the drain: send the spans still queued (those of the
    /// last requests), waiting at most `within` (a dead collector must not
    /// hold the exit; what is left then is counted as dropped `shutdown`).
    pub fn finish(&self, within: Duration) {
        self.on.store(false, Ordering::Release);
        if let Some(p) = self.current.swap(None) {
            if !p.export.finish(within) {
                tracing::warn!(
                    after = ?within,
                    "exit: the OTLP exporter had not sent the last spans in time"
                );
            }
        }
    }

    /// Start the gateway span of a request whose headers are `headers`,
    /// received at `start`; `None` when tracing is off.
    pub fn start(&self, headers: &http::HeaderMap, start: SystemTime) -> Option<Hop> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let pipeline = self.current.load_full()?;
        Some(Hop::start(&pipeline.tracer, headers, start))
    }
}

impl Pipeline {
    fn start(settings: &Settings) -> Result<Self, ExportError> {
        let resource = Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let processor = export::QueueProcessor::start(settings, resource.clone())?;
        let export = processor.control();
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
            export,
        })
    }
}

#[cfg(test)]
mod tests;
