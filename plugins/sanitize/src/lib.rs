//! The `sanitize` filter: removes the extra headers an operator names in
//! `sanitize.strip_headers` before the request goes upstream (e.g. an
//! identity header of a system behind the gateway, `x-internal-user`).
//!
//! The identity headers ztgate itself asserts (`x-ztgate-*`,
//! `x-forwarded-client-cert`, `x-device-fingerprint`, see
//! [`ztgate_filter::identity_headers`]) are not this filter's job: the
//! gateway removes them from every request before the chain runs, whatever
//! `pipeline:` says, so leaving `sanitize` out (or putting it late) can
//! never let a client forge them. This filter adds only its configured
//! extras. It never denies: a stray header is dropped, not an error,
//! because a misbehaving proxy in front of a legitimate client must not
//! break it.

use http::HeaderName;
use serde::Deserialize;
use ztgate_filter::{BuildContext, ConfigProblem, Decision, Facts, Filter, Mode, RequestView};

pub mod raw {
    use super::*;

    /// `sanitize:` section.
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Sanitize {
        #[serde(default)]
        pub mode: Mode,
        /// Header names to strip (case-insensitive), besides the identity
        /// headers the gateway always removes.
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
    /// Whether a header is one of the configured extras to remove before
    /// the request goes upstream.
    pub fn must_strip(&self, name: &HeaderName) -> bool {
        self.extra.contains(name)
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

    /// Only the configured extras: the identity headers are the gateway's
    /// to remove (before the chain), not this filter's.
    #[tokio::test]
    async fn strips_the_configured_headers_only() {
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
        assert_eq!(stripped, vec!["x-internal-user"]);
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
