//! Process-wide Prometheus metrics (names from PRODUCT.md).
//!
//! Label values are bounded: route and upstream names come from config,
//! reasons and decisions from code, never from request data.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

/// Buckets for a sub-millisecond proxy: 50 µs … 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];
/// Filters run in microseconds: 1 µs … 100 ms.
const FILTER_BUCKETS: &[f64] = &[
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.001, 0.01, 0.1,
];

macro_rules! metric {
    ($name:ident: $ty:ty = $e:expr) => {
        pub static $name: LazyLock<$ty> = LazyLock::new(|| {
            #[allow(clippy::expect_used)]
            // Registration only fails on a duplicate name: a programming error.
            $e.expect(concat!("register ", stringify!($name)))
        });
    };
}

metric!(REQUESTS: IntCounterVec = register_int_counter_vec!(
    "ztgate_requests_total",
    "Requests by route, upstream, decision (allow, deny, shadow_deny, error), reason and gRPC status.",
    &["route", "upstream", "decision", "reason", "grpc_status"]
));
metric!(REQUEST_DURATION: HistogramVec = register_histogram_vec!(
    "ztgate_request_duration_seconds",
    "Whole request time in the gateway, from request headers to the end of the response.",
    &["route"],
    LATENCY_BUCKETS.to_vec()
));
metric!(FILTER_DURATION: HistogramVec = register_histogram_vec!(
    "ztgate_filter_duration_seconds",
    "Time spent in each request filter.",
    &["filter"],
    FILTER_BUCKETS.to_vec()
));
metric!(UPSTREAM_DURATION: HistogramVec = register_histogram_vec!(
    "ztgate_upstream_duration_seconds",
    "Time from sending the request upstream to the end of the response.",
    &["upstream"],
    LATENCY_BUCKETS.to_vec()
));
metric!(BUILD_INFO: IntGaugeVec = register_int_gauge_vec!(
    "ztgate_build_info",
    "Always 1; labels carry the version.",
    &["version"]
));
metric!(CONFIG_RELOADS: IntCounterVec = register_int_counter_vec!(
    "ztgate_config_reloads_total",
    "Config and certificate reloads by result (ok, error).",
    &["result"]
));
metric!(CERT_EXPIRY: IntGaugeVec = register_int_gauge_vec!(
    "ztgate_certificate_expiry_timestamp_seconds",
    "notAfter of each certificate in use, as a Unix timestamp.",
    &["name"]
));
metric!(HEALTHY_BACKENDS: IntGaugeVec = register_int_gauge_vec!(
    "ztgate_upstream_healthy_backends",
    "Backends currently considered healthy, per upstream pool.",
    &["upstream"]
));
metric!(PROXY_PROTOCOL: IntCounterVec = register_int_counter_vec!(
    "ztgate_proxy_protocol_headers_total",
    "PROXY protocol headers read from trusted proxies, by result (proxy, local, malformed, timeout, closed, io).",
    &["result"]
));
metric!(DNS_REFRESH: IntCounterVec = register_int_counter_vec!(
    "ztgate_upstream_dns_refresh_total",
    "Lookups of backend names, per upstream pool, by result (unchanged, changed, error).",
    &["upstream", "result"]
));
metric!(AUDIT_DROPPED: IntCounter = register_int_counter!(
    "ztgate_audit_dropped_total",
    "Audit lines dropped because the writer could not keep up."
));

metric!(CONNECTIONS_OPEN: IntGauge = register_int_gauge!(
    "ztgate_connections_open",
    "Client connections open on the gRPC listener, from accept to close (TLS handshakes included)."
));
metric!(CONNECTIONS_REFUSED: IntCounterVec = register_int_counter_vec!(
    "ztgate_connections_refused_total",
    "Client connections closed right after accept, by reason (per_ip, global: a connection cap; draining: after SIGTERM).",
    &["reason"]
));
metric!(REQUESTS_IN_FLIGHT: IntGauge = register_int_gauge!(
    "ztgate_requests_in_flight",
    "Requests being served on the gRPC listener (HTTP/2 streams, HTTP/1.1 requests), from the drain's count when /metrics is read."
));
metric!(REQUEST_HEADER_TIMEOUTS: IntCounter = register_int_counter!(
    "ztgate_request_header_timeouts_total",
    "Connections closed because no request headers arrived within listener.request_header_timeout of the TLS handshake."
));

metric!(HANDSHAKE_FAILURES: IntCounterVec = register_int_counter_vec!(
    "ztgate_downstream_handshake_failures_total",
    "Client connections that failed before their first request, by stage (tls: TLS handshake failed or the peer closed, as a TCP health probe does; tls_timeout; h2: no valid HTTP/2 preface). Counted instead of logged.",
    &["stage"]
));

metric!(CRL_NEXT_UPDATE: IntGaugeVec = register_int_gauge_vec!(
    "ztgate_crl_next_update_timestamp_seconds",
    "nextUpdate of each CRL in listener.tls.crl (unix seconds), by issuing CA; past it, fetch a new CRL.",
    &["issuer", "file"]
));

metric!(CLIENT_CERT_REFUSALS: IntCounterVec = register_int_counter_vec!(
    "ztgate_client_cert_refusals_total",
    "Client certificates whose chain verified but that were refused, by reason: revoked (listener.tls.crl or listener.tls.ocsp; with client_auth: optional treated as no certificate), ocsp_unavailable (listener.tls.ocsp mode hard without a good answer), and the trust-domain binding of mtls.trust_bundles: unknown_trust_domain, wrong_trust_bundle (a CA of another trust domain), no_spiffe_id (not under client_ca), bad_spiffe_id, several_trust_domains.",
    &["reason"]
));

metric!(WORKLOAD_API_UPDATES: IntCounterVec = register_int_counter_vec!(
    "ztgate_workload_api_updates_total",
    "Updates accepted from the SPIFFE Workload API (spiffe.workload_api), by kind: x509_svid (FetchX509SVID: SVID and bundles), x509_bundles (FetchX509Bundles).",
    &["kind"]
));
metric!(WORKLOAD_API_ERRORS: IntCounterVec = register_int_counter_vec!(
    "ztgate_workload_api_errors_total",
    "SPIFFE Workload API failures, by reason: connect (socket unreachable), refused (the agent answered an error status), stream (the stream broke or ended), malformed (an update refused: no SVID, bad key, key not the certificate's, bad bundle), material (an update that does not combine with the file material). The last good material keeps serving.",
    &["reason"]
));
metric!(WORKLOAD_API_CONNECTED: IntGauge = register_int_gauge!(
    "ztgate_workload_api_connected",
    "1 while the stream from the SPIFFE Workload API is open, else 0."
));

metric!(OCSP_CHECKS: IntCounterVec = register_int_counter_vec!(
    "ztgate_ocsp_checks_total",
    "OCSP checks of client certificates (listener.tls.ocsp), by result (good, revoked, unknown; error: no answer could be had or it did not verify; no_responder: the certificate names none) and whether the answer came from the cache (cached=false: the responder was asked, for a handshake or to refresh an answer in the last quarter of its life).",
    &["result", "cached"]
));

metric!(STAPLE_REFRESH: IntCounterVec = register_int_counter_vec!(
    "ztgate_ocsp_staple_refresh_total",
    "Fetches of the server certificate's OCSP response for stapling (listener.tls.ocsp_stapling), by result (ok, error: the last good response is stapled until its nextUpdate).",
    &["result"]
));

metric!(STAPLE_NEXT_UPDATE: IntGauge = register_int_gauge!(
    "ztgate_ocsp_staple_next_update_timestamp_seconds",
    "nextUpdate of the OCSP response stapled now (unix seconds); 0 when there is none to staple."
));

metric!(TRACE_SPANS_EXPORTED: IntCounter = register_int_counter!(
    "ztgate_trace_spans_exported_total",
    "Spans the OTLP collector accepted (tracing.otlp)."
));
metric!(TRACE_SPANS_DROPPED: IntCounterVec = register_int_counter_vec!(
    "ztgate_trace_spans_dropped_total",
    "Sampled spans not exported, by reason: queue_full (tracing.queue_size reached: the collector is slow or down), export_failed (the collector refused or did not answer within tracing.otlp.timeout), shutdown (ended after their exporter stopped).",
    &["reason"]
));
/// The series of [`TRACE_SPANS_DROPPED`], resolved once: counted from the
/// request path (a full queue) without the vec's lock.
pub static TRACE_SPANS_DROPPED_QUEUE_FULL: LazyLock<IntCounter> =
    LazyLock::new(|| TRACE_SPANS_DROPPED.with_label_values(&["queue_full"]));
pub static TRACE_SPANS_DROPPED_EXPORT_FAILED: LazyLock<IntCounter> =
    LazyLock::new(|| TRACE_SPANS_DROPPED.with_label_values(&["export_failed"]));
pub static TRACE_SPANS_DROPPED_SHUTDOWN: LazyLock<IntCounter> =
    LazyLock::new(|| TRACE_SPANS_DROPPED.with_label_values(&["shutdown"]));

/// The `ztgate_filter_duration_seconds` series of each built-in filter,
/// resolved once: observed for every filter of every request, where
/// `with_label_values` would hash the label and take the vec's lock.
static FILTER_DURATION_OF: LazyLock<Vec<(&'static str, prometheus::Histogram)>> =
    LazyLock::new(|| {
        ztgate_filter::FilterKind::ALL
            .iter()
            .map(|k| (k.as_str(), FILTER_DURATION.with_label_values(&[k.as_str()])))
            .collect()
    });

/// Record one filter's time (a filter name not built in still counts,
/// through the vec).
pub fn observe_filter(filter: &str, seconds: f64) {
    match FILTER_DURATION_OF.iter().find(|(name, _)| *name == filter) {
        Some((_, h)) => h.observe(seconds),
        None => FILTER_DURATION
            .with_label_values(&[filter])
            .observe(seconds),
    }
}

/// Touch every metric so `/metrics` lists them from the start.
pub fn init() {
    BUILD_INFO
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&FILTER_DURATION);
    LazyLock::force(&UPSTREAM_DURATION);
    for r in ["ok", "error"] {
        CONFIG_RELOADS.with_label_values(&[r]);
    }
    LazyLock::force(&CERT_EXPIRY);
    LazyLock::force(&HEALTHY_BACKENDS);
    ztgate_state::register_metrics();
    // A closed set of results: their series exist at zero from the start.
    for r in ["proxy", "local", "malformed", "timeout", "closed", "io"] {
        PROXY_PROTOCOL.with_label_values(&[r]);
    }
    // Per pool with backend names; series appear with the first lookup.
    LazyLock::force(&DNS_REFRESH);
    // The filter crates' own metrics, listed from the start too (cache
    // results are a closed set, so their series can exist at zero).
    LazyLock::force(&ztgate_jwt::metrics::JWKS_REFRESH);
    for r in ["hit", "miss"] {
        ztgate_jwt::metrics::CACHE.with_label_values(&[r]);
    }
    LazyLock::force(&ztgate_device::DECISIONS);
    LazyLock::force(&AUDIT_DROPPED);
    LazyLock::force(&CONNECTIONS_OPEN);
    LazyLock::force(&REQUESTS_IN_FLIGHT);
    for r in crate::conn_limits::Refused::ALL {
        CONNECTIONS_REFUSED.with_label_values(&[r.label()]);
    }
    LazyLock::force(&REQUEST_HEADER_TIMEOUTS);
    for reason in crate::tls::trust::TrustRefusal::LABELS {
        CLIENT_CERT_REFUSALS.with_label_values(&[reason]);
    }
    for kind in ["x509_svid", "x509_bundles"] {
        WORKLOAD_API_UPDATES.with_label_values(&[kind]);
    }
    for reason in ["connect", "refused", "stream", "malformed", "material"] {
        WORKLOAD_API_ERRORS.with_label_values(&[reason]);
    }
    LazyLock::force(&WORKLOAD_API_CONNECTED);
    for result in crate::tls::ocsp::RESULTS {
        for cached in ["true", "false"] {
            OCSP_CHECKS.with_label_values(&[result, cached]);
        }
    }
    for r in ["ok", "error"] {
        STAPLE_REFRESH.with_label_values(&[r]);
    }
    LazyLock::force(&STAPLE_NEXT_UPDATE);
    LazyLock::force(&TRACE_SPANS_EXPORTED);
    LazyLock::force(&TRACE_SPANS_DROPPED_QUEUE_FULL);
    LazyLock::force(&TRACE_SPANS_DROPPED_EXPORT_FAILED);
    LazyLock::force(&TRACE_SPANS_DROPPED_SHUTDOWN);
    for stage in crate::logging::HandshakeStage::ALL {
        HANDSHAKE_FAILURES.with_label_values(&[stage.label()]);
    }
}

/// Render the default registry in the text format.
pub fn render() -> Vec<u8> {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut buf) {
        tracing::error!(error = %e, "could not encode metrics");
    }
    buf
}
