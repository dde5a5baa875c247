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

mod build;
pub mod config;

use http::HeaderName;
use ztgate_filter::{Decision, Facts, Filter, RequestView};

pub use build::build;

/// The built `sanitize` filter.
#[derive(Debug, Clone)]
pub struct SanitizeFilter {
    extra: Vec<HeaderName>,
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
        ztgate_filter::FilterKind::Sanitize.as_str()
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
    use ztgate_filter::{BuildContext, Mode, TlsFacts};

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
            &config::Sanitize {
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
            &config::Sanitize {
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
