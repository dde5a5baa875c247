//! The `sanitize` filter: removes headers that carry identity the gateway
//! asserts, so a client can never forge them.
//!
//! Stripped always: every `x-ztgate-*` header, `x-forwarded-client-cert` and
//! `x-device-fingerprint`; plus the configured `strip_headers`. The filter
//! never denies: a forged header is dropped, not an error, because a
//! misbehaving proxy in front of a legitimate client must not break it.

use http::HeaderName;
use serde::Deserialize;
use ztgate_filter::{BuildContext, ConfigProblem, Decision, Facts, Filter, Mode, RequestView};

/// Headers no client may set (besides the `x-ztgate-` prefix).
pub const ALWAYS_STRIPPED: &[&str] = &["x-forwarded-client-cert", "x-device-fingerprint"];
/// Prefix of every header the gateway asserts.
pub const ZTGATE_PREFIX: &str = "x-ztgate-";

pub mod raw {
    use super::*;

    /// `sanitize:` section.
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Sanitize {
        #[serde(default)]
        pub mode: Mode,
        /// Extra header names to strip (case-insensitive).
        #[serde(default)]
        pub strip_headers: Vec<String>,
    }
}

/// The built `sanitize` filter.
#[derive(Debug, Clone)]
pub struct SanitizeFilter {
    extra: Vec<HeaderName>,
}

/// Build the filter, reporting every invalid header name.
pub fn build(
    raw: &raw::Sanitize,
    _ctx: &BuildContext,
    path: &str,
) -> Result<SanitizeFilter, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let mut extra = Vec::new();
    for (i, name) in raw.strip_headers.iter().enumerate() {
        match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(h) => extra.push(h),
            Err(_) => problems.push(ConfigProblem::new(
                format!("{path}.strip_headers[{i}]"),
                format!("`{name}` is not a valid header name"),
            )),
        }
    }
    if problems.is_empty() {
        Ok(SanitizeFilter { extra })
    } else {
        Err(problems)
    }
}

impl SanitizeFilter {
    /// Whether a header must be removed before the request goes upstream.
    pub fn must_strip(&self, name: &HeaderName) -> bool {
        let n = name.as_str();
        n.starts_with(ZTGATE_PREFIX) || ALWAYS_STRIPPED.contains(&n) || self.extra.contains(name)
    }
}

#[async_trait::async_trait]
impl Filter for SanitizeFilter {
    fn name(&self) -> &'static str {
        "sanitize"
    }

    async fn evaluate(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision {
        for name in req.headers.keys() {
            if self.must_strip(name) && !facts.strip_headers.contains(name) {
                facts.strip_headers.push(name.clone());
            }
        }
        Decision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, Method};
    use std::path::PathBuf;
    use ztgate_filter::TlsFacts;

    fn ctx() -> BuildContext {
        BuildContext {
            base_dir: PathBuf::from("."),
            upstreams: vec![],
            pipeline: vec![],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn strips_identity_headers_and_configured_ones() {
        let f = build(
            &raw::Sanitize {
                mode: Mode::Enforce,
                strip_headers: vec!["X-Internal-User".into()],
            },
            &ctx(),
            "sanitize",
        )
        .unwrap();
        let mut h = HeaderMap::new();
        for n in [
            "x-ztgate-spiffe-id",
            "x-ztgate-subject",
            "x-forwarded-client-cert",
            "x-device-fingerprint",
            "x-internal-user",
            "x-request-id",
            "user-agent",
        ] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static("v"));
        }
        let tls = TlsFacts::default();
        let view = RequestView {
            method: &Method::POST,
            path: "/a.B/C",
            authority: None,
            headers: &h,
            tls: &tls,
            client_ip: None,
            socket_ip: None,
            now: std::time::SystemTime::now(),
        };
        let mut facts = Facts::default();
        assert_eq!(f.evaluate(&view, &mut facts).await, Decision::Continue);
        let mut stripped: Vec<_> = facts.strip_headers.iter().map(|h| h.as_str()).collect();
        stripped.sort();
        assert_eq!(
            stripped,
            vec![
                "x-device-fingerprint",
                "x-forwarded-client-cert",
                "x-internal-user",
                "x-ztgate-spiffe-id",
                "x-ztgate-subject"
            ]
        );
    }

    #[test]
    fn bad_header_name_is_reported_with_its_path() {
        let err = build(
            &raw::Sanitize {
                mode: Mode::Enforce,
                strip_headers: vec!["ok".into(), "bad header".into()],
            },
            &ctx(),
            "sanitize",
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].path, "sanitize.strip_headers[1]");
    }
}
