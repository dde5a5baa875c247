//! `tracing:` — the section as written, and its check into [`Settings`].
//!
//! ```yaml
//! tracing:
//!   otlp:
//!     endpoint: http://otel-collector:4317   # grpc; http: …:4318 (/v1/traces added when no path)
//!     protocol: grpc                         # or http (HTTP/protobuf)
//!     timeout: 2s                            # per export batch
//!     headers: { x-api-key: "${OTLP_KEY}" }  # sent with every export
//!   sample_ratio: 0.01                       # new traces; a client's sampled flag is followed
//!   service_name: ztgate
//!   queue_size: 2048                         # spans waiting for export; beyond it, dropped and counted
//! ```
//!
//! Checking parses and bounds every value and opens nothing: `ztgate check`
//! runs it, and the exporter is only started by a serving process.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use ztgate_filter::ConfigProblem;
use ztgate_state::raw::Secret;

/// `tracing:` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSection {
    pub otlp: OtlpSection,
    /// Share of new traces (no sampled parent from the client) recorded and
    /// exported, 0.0–1.0. Required: the cost of tracing is the operator's
    /// choice, not a default.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Finished spans waiting for the exporter; beyond it spans are dropped
    /// (and counted), never waited for.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
}

/// `tracing.otlp:` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSection {
    /// `http://host:port` (or `https://`).
    pub endpoint: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// Longest one export may take (connect included); then its spans are
    /// dropped and counted.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Sent with every export (collector or vendor API keys: values may be
    /// `${VAR}` and are never printed).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`), port 4317 by convention.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`POST /v1/traces`), port 4318 by convention.
    Http,
}

/// The OpenTelemetry SDK's own default (`OTEL_SERVICE_NAME` unset) would be
/// `unknown_service`; the gateway knows its name.
fn default_service_name() -> String {
    "ztgate".into()
}

/// The SDK batch processor's default (`OTEL_BSP_MAX_QUEUE_SIZE`): about a
/// second of spans at 2,000 sampled calls per second, a few MiB at most.
fn default_queue_size() -> usize {
    2048
}

/// Short enough that a collector that stopped answering costs at most a
/// couple of seconds of spans (the queue fills and drops meanwhile), long
/// enough for a collector across a zone.
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Largest `queue_size`: a queue this long is already minutes of spans at
/// any sane rate; more would only hide a dead collector behind memory.
pub const MAX_QUEUE_SIZE: usize = 1 << 20;
/// Longest `otlp.timeout`: the export thread is blocked this long per
/// batch when the collector does not answer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// `tracing:` checked: what the exporter and the sampler are built from.
/// Two equal settings build the same pipeline, so a reload that leaves the
/// section alone keeps the running exporter (see `super::Tracing::apply`).
#[derive(Clone, PartialEq)]
pub struct Settings {
    pub protocol: Protocol,
    /// The URL the exporter sends to (for `http`, with `/v1/traces`).
    pub endpoint: String,
    pub timeout: Duration,
    /// Lowercase names, values as written.
    pub headers: Vec<(String, Secret)>,
    pub sample_ratio: f64,
    pub service_name: String,
    pub queue_size: usize,
}

impl fmt::Debug for Settings {
    /// Header values are secrets: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("sample_ratio", &self.sample_ratio)
            .field("service_name", &self.service_name)
            .field("queue_size", &self.queue_size)
            .finish()
    }
}

/// Check `tracing:` (at key path `path`); every problem with its key.
pub fn check(raw: &TracingSection, path: &str) -> Result<Settings, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let at = |key: &str| format!("{path}.{key}");
    let otlp = &raw.otlp;
    let endpoint = match endpoint(&otlp.endpoint, otlp.protocol) {
        Ok(e) => e,
        Err(msg) => {
            problems.push(ConfigProblem::new(at("otlp.endpoint"), msg));
            String::new()
        }
    };
    if otlp.timeout.is_zero() || otlp.timeout > MAX_TIMEOUT {
        problems.push(ConfigProblem::new(
            at("otlp.timeout"),
            format!(
                "must be more than 0s and at most {}",
                humantime::format_duration(MAX_TIMEOUT)
            ),
        ));
    }
    let mut headers = Vec::new();
    for (name, value) in &otlp.headers {
        let key = at(&format!("otlp.headers.{name}"));
        match header(name, value.expose(), otlp.protocol) {
            Ok(n) => headers.push((n, value.clone())),
            Err(msg) => problems.push(ConfigProblem::new(key, msg)),
        }
    }
    if !(0.0..=1.0).contains(&raw.sample_ratio) {
        // NaN fails `contains` too.
        problems.push(ConfigProblem::new(
            at("sample_ratio"),
            format!("must be between 0 and 1, not {}", raw.sample_ratio),
        ));
    }
    if raw.service_name.trim().is_empty() {
        problems.push(ConfigProblem::new(at("service_name"), "must not be empty"));
    }
    if raw.queue_size == 0 || raw.queue_size > MAX_QUEUE_SIZE {
        problems.push(ConfigProblem::new(
            at("queue_size"),
            format!("must be between 1 and {MAX_QUEUE_SIZE}"),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Settings {
        protocol: otlp.protocol,
        endpoint,
        timeout: otlp.timeout,
        headers,
        sample_ratio: raw.sample_ratio,
        service_name: raw.service_name.clone(),
        queue_size: raw.queue_size,
    })
}

/// The URL the exporter uses: `http(s)://host:port`, and for `http` the
/// OTLP/HTTP traces path (`/v1/traces`) when the endpoint has no path of
/// its own — the collector's default route, and what other OTLP clients add
/// to a bare `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn endpoint(s: &str, protocol: Protocol) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("`{s}` must start with http:// or https://")),
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(format!("`{s}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{s}` must not have a query"));
    }
    let path = uri.path();
    Ok(match protocol {
        Protocol::Grpc if path.is_empty() || path == "/" => s.trim_end_matches('/').to_owned(),
        Protocol::Grpc => {
            return Err(format!(
                "`{s}`: an OTLP/gRPC endpoint is scheme://host:port, without a path"
            ))
        }
        Protocol::Http if path.is_empty() || path == "/" => {
            format!("{}/v1/traces", s.trim_end_matches('/'))
        }
        Protocol::Http => s.to_owned(),
    })
}

/// A header the exporter can send: a valid HTTP field name (lowercase, as
/// gRPC metadata requires) and value. Binary (`-bin`) metadata is refused:
/// its value would have to be base64 in the file, an easy thing to get
/// wrong silently.
fn header(name: &str, value: &str, protocol: Protocol) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
        return Err(format!("`{name}` is not a valid header name"));
    }
    if protocol == Protocol::Grpc && lower.ends_with("-bin") {
        return Err("binary (`-bin`) metadata is not supported".into());
    }
    if lower.starts_with(':')
        || [
            "content-type",
            "te",
            "grpc-timeout",
            "content-length",
            "host",
        ]
        .contains(&lower.as_str())
    {
        return Err(format!("`{name}` is set by the exporter itself"));
    }
    if http::HeaderValue::from_str(value).is_err() {
        // Never echo the value: it is likely a key.
        return Err("the value is not a valid header value (control characters?)".into());
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> TracingSection {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn problems(yaml: &str) -> Vec<String> {
        check(&section(yaml), "tracing")
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults_and_endpoints() {
        let s = check(
            &section("otlp: { endpoint: \"http://127.0.0.1:4317/\" }\nsample_ratio: 0.5\n"),
            "tracing",
        )
        .unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:4317");
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.service_name, "ztgate");
        assert_eq!(s.queue_size, 2048);
        let http = |e: &str| {
            check(
                &section(&format!(
                    "otlp: {{ endpoint: \"{e}\", protocol: http }}\nsample_ratio: 1\n"
                )),
                "tracing",
            )
            .unwrap()
            .endpoint
        };
        assert_eq!(http("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http("https://c:4318/"), "https://c:4318/v1/traces");
        assert_eq!(http("https://c/otlp/v1/traces"), "https://c/otlp/v1/traces");
    }

    /// Each bad value is named by its key, all of them at once.
    #[test]
    fn every_problem_is_reported_with_its_key() {
        let p = problems(
            "otlp:\n  endpoint: \"collector:4317\"\n  timeout: 0s\n  headers: { \"bad header\": x, x-bin: y }\nsample_ratio: 1.5\nservice_name: \" \"\nqueue_size: 0\n",
        );
        let joined = p.join("\n");
        for want in [
            "tracing.otlp.endpoint: `collector:4317` must start with http:// or https://",
            "tracing.otlp.timeout: must be more than 0s",
            "tracing.otlp.headers.bad header: `bad header` is not a valid header name",
            "tracing.otlp.headers.x-bin: binary (`-bin`) metadata is not supported",
            "tracing.sample_ratio: must be between 0 and 1, not 1.5",
            "tracing.service_name: must not be empty",
            "tracing.queue_size: must be between 1 and",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
        assert!(
            problems("otlp: { endpoint: \"http://c:4317/v1/traces\" }\nsample_ratio: 1\n")
                .join("")
                .contains("without a path")
        );
        assert!(
            problems("otlp: { endpoint: \"http://:4317\" }\nsample_ratio: 1\n")
                .join("")
                .starts_with("tracing.otlp.endpoint: ")
        );
        assert!(problems("otlp: { endpoint: x }\nsample_ratio: .nan\n")
            .join("")
            .contains("sample_ratio: must be between 0 and 1"));
    }

    /// A header value is a secret: neither a problem nor `Debug` shows it.
    #[test]
    fn header_values_are_never_printed() {
        let raw = section(
            "otlp: { endpoint: \"http://c:4317\", headers: { x-api-key: \"s3cr3t\\u0001\" } }\nsample_ratio: 1\n",
        );
        let p = check(&raw, "tracing").err().unwrap();
        assert!(!format!("{p:?}").contains("s3cr3t"));
        let ok = section(
            "otlp: { endpoint: \"http://c:4317\", headers: { X-Api-Key: s3cr3t } }\nsample_ratio: 1\n",
        );
        let s = check(&ok, "tracing").unwrap();
        assert_eq!(s.headers[0].0, "x-api-key");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(!format!("{ok:?}").contains("s3cr3t"));
    }
}
