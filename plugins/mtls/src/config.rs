//! The `mtls:` section exactly as written in YAML: pure serde data and its
//! defaults. [`crate::build`] checks it and turns it into a
//! [`crate::MtlsFilter`].

use serde::Deserialize;
use ztgate_filter::Mode;

/// `mtls:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mtls {
    #[serde(default)]
    pub mode: Mode,
    /// Deny requests that carry no client certificate (`client_cert_missing`).
    /// Only matters with `listener.tls.client_auth: optional`.
    /// Default [`DEFAULT_REQUIRE`].
    #[serde(default = "require")]
    pub require_cert: bool,
    /// The leaf must be a valid X.509-SVID (`invalid_svid` otherwise).
    /// Default [`DEFAULT_REQUIRE`].
    #[serde(default = "require")]
    pub require_svid: bool,
    /// Allowed trust domains; empty allows any the trust bundle accepted.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    /// Allowed SPIFFE ID patterns (`*` within one segment, `**` any depth;
    /// the same syntax as route `spiffe:` lists);
    /// empty allows any ID of an allowed trust domain.
    #[serde(default)]
    pub allowed_ids: Vec<String>,
    /// A CA bundle per trust domain (PEM, or the SPIFFE bundle JSON
    /// format): a client certificate is accepted only if it chains to the
    /// bundle of the trust domain in its SPIFFE ID. Read by the listener's
    /// TLS handshake (the gateway checks and loads it), not by this filter.
    #[serde(default)]
    pub trust_bundles: std::collections::BTreeMap<String, String>,
}

/// Default of `require_cert` and `require_svid`: on. A zero-trust gateway
/// refuses a caller it cannot identify unless the operator says otherwise.
pub const DEFAULT_REQUIRE: bool = true;

// serde's `default = "…"` takes a function, not a constant.
fn require() -> bool {
    DEFAULT_REQUIRE
}

impl Default for Mtls {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            require_cert: DEFAULT_REQUIRE,
            require_svid: DEFAULT_REQUIRE,
            trust_domains: Vec::new(),
            allowed_ids: Vec::new(),
            trust_bundles: std::collections::BTreeMap::new(),
        }
    }
}
