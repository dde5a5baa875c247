//! `sanitize:` → [`SanitizeFilter`]: every invalid header name reported
//! with its key path.

use http::HeaderName;
use ztgate_filter::{BuildContext, ConfigProblem};

use crate::config;
use crate::SanitizeFilter;

/// Build the filter, reporting every invalid header name.
pub fn build(
    raw: &config::Sanitize,
    _ctx: &BuildContext,
    path: &str,
) -> Result<SanitizeFilter, Vec<ConfigProblem>> {
    let config::Sanitize {
        mode: _, // applied by the gateway's Stage
        strip_headers,
    } = raw;
    let mut problems = Vec::new();
    let mut extra = Vec::new();
    for (i, name) in strip_headers.iter().enumerate() {
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
