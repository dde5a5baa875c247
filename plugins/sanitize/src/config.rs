//! The `sanitize:` section exactly as written in YAML: pure serde data.
//! [`crate::build`] checks it and turns it into a
//! [`crate::SanitizeFilter`].

use serde::Deserialize;
use ztgate_filter::Mode;

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
