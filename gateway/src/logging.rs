//! The process's log subscriber: `log.level` (or `RUST_LOG`) for ztgate's
//! own targets, and a cap that no setting lifts for every library.
//!
//! The contract says no log line ever contains a token, a key or a secret,
//! at any level (PRODUCT.md "Denials", "Audit and logs"). ztgate's own log
//! lines are written to keep that promise; libraries' are not. Pingora's
//! proxy prints every upstream request with its headers at `debug`
//! (`pingora_proxy::proxy_h2`: "Request to h2: …", `authorization` and
//! `dpop` included), and other libraries dump frames or handshakes at
//! `debug`/`trace`. With one filter for every target, `log.level: debug`
//! put bearer tokens in the log (issue 11). So two filters are stacked, and
//! a line must pass both:
//!
//! * the user's: `RUST_LOG` when set and valid, else `log.level`, else `info`;
//! * the cap: targets of ztgate's own crates (`ztgate`, `ztgate_*`) pass at
//!   any level, every other target at most [`LIBRARY_MAX_LEVEL`].
//!
//! The cap is an allow-list of our own targets rather than a list of
//! libraries to quiet, so a library added later is capped too. It applies
//! to `log`-crate records (Pingora, rustls) as well: `try_init` installs the
//! `log` bridge, whose records are filtered like any event.
//!
//! One more layer turns Pingora's per-connection handshake ERROR lines into
//! a metric ([`HandshakeNoise`]): every load-balancer TCP probe that
//! connects and closes, every scanner, every refused connection wrote an
//! ERROR line, drowning real errors. They are counted in
//! `ztgate_downstream_handshake_failures_total{stage}` instead.

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Registry;

use crate::config::raw::LogFormat;

/// The most verbose level any library logs at. `info` keeps what operators
/// rely on (Pingora's start-up, upgrade and shutdown lines) and is below
/// every header, frame and handshake dump.
pub const LIBRARY_MAX_LEVEL: LevelFilter = LevelFilter::INFO;

/// The target prefix of ztgate's own crates: `ztgate::…` (the binary) and
/// `ztgate_jwt::…`, `ztgate_state::…` and the like (a target is the
/// emitting module's path).
const OWN_TARGETS: &str = "ztgate";

/// The cap that holds whatever `log.level` or `RUST_LOG` say.
pub fn library_cap() -> Targets {
    Targets::new()
        .with_default(LIBRARY_MAX_LEVEL)
        .with_target(OWN_TARGETS, LevelFilter::TRACE)
}

/// The user's filter: `rust_log` (the `RUST_LOG` variable) when set and
/// valid, else `level` (`log.level`, already checked by `ztgate check`),
/// else `info`.
pub fn user_filter(rust_log: Option<&str>, level: &str) -> EnvFilter {
    rust_log
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// The subscriber: the user's filter, the cap, then the formatter writing
/// to `writer` as text or JSON.
pub fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    type Filtered = Layered<HandshakeNoise, Layered<Targets, Layered<EnvFilter, Registry>>>;
    let fmt: Box<dyn Layer<Filtered> + Send + Sync> = match format {
        LogFormat::Json => Box::new(tracing_subscriber::fmt::layer().json().with_writer(writer)),
        LogFormat::Text => Box::new(tracing_subscriber::fmt::layer().with_writer(writer)),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(library_cap())
        .with(HandshakeNoise)
        .with(fmt)
}

/// Where a client connection failed before its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeStage {
    /// The TLS handshake failed (or the peer closed: a TCP health probe).
    Tls,
    /// The TLS handshake took longer than Pingora's 60 s.
    TlsTimeout,
    /// No valid HTTP/2 preface after TLS.
    H2,
}

impl HandshakeStage {
    pub const ALL: [HandshakeStage; 3] = [
        HandshakeStage::Tls,
        HandshakeStage::TlsTimeout,
        HandshakeStage::H2,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HandshakeStage::Tls => "tls",
            HandshakeStage::TlsTimeout => "tls_timeout",
            HandshakeStage::H2 => "h2",
        }
    }

    /// Pingora's per-connection handshake lines (`pingora_core`
    /// `services/listening.rs`, `apps/mod.rs` in 0.9.1), by their text.
    fn of(target: &str, message: &str) -> Option<Self> {
        if !target.starts_with("pingora_core") {
            return None;
        }
        if message.starts_with("Downstream handshake error") {
            Some(HandshakeStage::Tls)
        } else if message.starts_with("Downstream handshake timeout") {
            Some(HandshakeStage::TlsTimeout)
        } else if message.starts_with("H2 handshake error") {
            Some(HandshakeStage::H2)
        } else {
            None
        }
    }
}

/// Drops Pingora's per-connection handshake ERROR lines and counts them
/// (see the module docs). Only `pingora_core` events are inspected.
pub struct HandshakeNoise;

/// The start of an event's `message`, and the original target of a
/// `log`-crate record (whose event metadata says only `log`: the bridge
/// puts the real target in the `log.target` field).
#[derive(Default)]
struct Fields {
    message: String,
    log_target: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.chars().take(32).collect(),
            "log.target" => self.log_target = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let mut s = format!("{value:?}");
            s.truncate(s.char_indices().nth(32).map_or(s.len(), |(i, _)| i));
            self.message = s;
        }
    }
}

impl<S: Subscriber> Layer<S> for HandshakeNoise {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let target = event.metadata().target();
        // Pingora logs through the `log` crate; only those events (and any
        // native pingora_core one) are looked into.
        if target != "log" && !target.starts_with("pingora_core") {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let target = fields.log_target.as_deref().unwrap_or(target);
        match HandshakeStage::of(target, &fields.message) {
            Some(stage) => {
                crate::metrics::HANDSHAKE_FAILURES
                    .with_label_values(&[stage.label()])
                    .inc();
                false
            }
            None => true,
        }
    }
}

/// Install the process's subscriber, writing to stderr as text or JSON
/// (what `ztgate run` calls instead of building a single `EnvFilter`). A
/// second call keeps the first subscriber.
pub fn init(level: &str, format: LogFormat) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = user_filter(rust_log.as_deref(), level);
    let _ = subscriber(filter, format, std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::Level;

    /// Whether the cap lets an event of `level` from `target` through.
    fn passes(target: &str, level: Level) -> bool {
        library_cap().would_enable(target, &level)
    }

    #[test]
    fn libraries_never_pass_debug_our_targets_pass_everything() {
        // Where the header dumps come from.
        for lib in [
            "pingora_proxy::proxy_h2",
            "pingora_core::protocols::http::v2::server",
            "h2::codec::framed_write",
            "hyper::proto::h1",
            "rustls::server::hs",
            "redis::aio",
            "reqwest::connect",
            "tonic::transport",
            "some_future_library",
        ] {
            assert!(!passes(lib, Level::DEBUG), "{lib}");
            assert!(!passes(lib, Level::TRACE), "{lib}");
            assert!(passes(lib, Level::INFO), "{lib}");
            assert!(passes(lib, Level::ERROR), "{lib}");
        }
        for own in [
            "ztgate::proxy",
            "ztgate_jwt::jwks",
            "ztgate_state::redis",
            "ztgate_device::first_seen",
        ] {
            assert!(passes(own, Level::TRACE), "{own}");
        }
    }

    #[test]
    fn handshake_lines_are_classified_by_target_and_text() {
        let l = "pingora_core::services::listening";
        assert_eq!(
            HandshakeStage::of(l, "Downstream handshake error from 1"),
            Some(HandshakeStage::Tls)
        );
        assert_eq!(
            HandshakeStage::of(l, "Downstream handshake timeout"),
            Some(HandshakeStage::TlsTimeout)
        );
        assert_eq!(
            HandshakeStage::of("pingora_core::apps", "H2 handshake error x"),
            Some(HandshakeStage::H2)
        );
        assert_eq!(HandshakeStage::of(l, "shutdown_signal error"), None);
        assert_eq!(
            HandshakeStage::of("ztgate::proxy", "Downstream handshake error"),
            None
        );
    }

    #[test]
    fn the_user_filter_is_read_from_rust_log_then_the_level() {
        assert_eq!(
            user_filter(Some("pingora_proxy=trace"), "info").to_string(),
            "pingora_proxy=trace"
        );
        assert_eq!(
            user_filter(Some("not a [filter"), "debug").to_string(),
            "debug"
        );
        assert_eq!(user_filter(None, "trace").to_string(), "trace");
        assert_eq!(user_filter(None, "not a [filter").to_string(), "info");
    }

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buf {
        type Writer = Buf;
        fn make_writer(&'w self) -> Buf {
            self.clone()
        }
    }

    /// Issue 11: at the most verbose setting, even one that names the
    /// library, Pingora's header dump is not written; our own debug line is.
    #[test]
    fn a_header_dump_never_reaches_the_log_at_any_level() {
        for (rust_log, format) in [
            (None, LogFormat::Text),
            (Some("trace"), LogFormat::Json),
            (Some("pingora_proxy=trace,ztgate=trace"), LogFormat::Text),
        ] {
            let buf = Buf::default();
            let s = subscriber(user_filter(rust_log, "trace"), format, buf.clone());
            tracing::subscriber::with_default(s, || {
                tracing::debug!(
                    target: "pingora_proxy::proxy_h2",
                    "Request to h2: authorization: Bearer eyJ-SECRET-TOKEN"
                );
                tracing::trace!(target: "h2::codec", "frame with eyJ-SECRET-TOKEN");
                tracing::debug!(target: "ztgate::proxy", "request done");
                tracing::info!(target: "pingora_proxy::proxy_common", "Bootstrap done");
            });
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert!(!text.contains("SECRET"), "{rust_log:?}: {text}");
            assert!(text.contains("request done"), "{rust_log:?}: {text}");
            assert!(text.contains("Bootstrap done"), "{rust_log:?}: {text}");
        }
    }
}
