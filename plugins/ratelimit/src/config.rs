//! The `ratelimit:` section exactly as written in YAML: pure serde data.
//! [`crate::build`] checks it and turns it into a
//! [`crate::RateLimitFilter`].

use std::time::Duration;

use serde::Deserialize;
use ztgate_filter::{FilterKind, Mode};

/// `ratelimit:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RateLimit {
    /// `shadow` counts and records `rate_limited` without refusing.
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One rule: at most `limit` requests per `interval` per `key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Rule {
    /// Unique; appears in the denial message.
    pub name: String,
    pub key: Key,
    /// Only count requests routed to this route (by name).
    #[serde(default)]
    pub route: Option<String>,
    /// Requests allowed per interval and key.
    pub limit: u32,
    /// Window length, e.g. `1s`, `1m` (1 second to 24 hours).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

/// Which identity a rule counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Key {
    /// The token's `sub`, per issuer (from `jwt`).
    Subject,
    /// The client certificate's SPIFFE ID (from `mtls`).
    SpiffeId,
    /// The device fingerprint (from `device`).
    Fingerprint,
    /// The client IP after `trusted_proxies` handling.
    ClientIp,
}

impl Key {
    pub fn as_str(self) -> &'static str {
        match self {
            Key::Subject => "subject",
            Key::SpiffeId => "spiffe_id",
            Key::Fingerprint => "fingerprint",
            Key::ClientIp => "client_ip",
        }
    }

    /// The filter that must run earlier for this identity to exist.
    pub fn provided_by(self) -> Option<FilterKind> {
        match self {
            Key::Subject => Some(FilterKind::Jwt),
            Key::SpiffeId => Some(FilterKind::Mtls),
            Key::Fingerprint => Some(FilterKind::Device),
            Key::ClientIp => None,
        }
    }
}
