//! The `device:` config section exactly as written in YAML: pure serde
//! data with its defaults. [`crate::build()`] checks it, opens the GeoIP
//! files and turns it into a [`crate::DeviceFilter`].

use std::time::Duration;

use serde::Deserialize;
use ztgate_filter::Mode;

use crate::fingerprint::Secret;
use crate::policy::{AnonymousCategory, UnknownCountry};

/// `device:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Device {
    /// Whole-filter mode (the gateway wraps the filter in a Stage).
    #[serde(default)]
    pub mode: Mode,
    /// HMAC key, at least 32 bytes; use `${VAR}`.
    pub secret: Secret,
    /// Older keys still accepted when comparing (token claims, bindings).
    #[serde(default)]
    pub previous_secrets: Vec<Secret>,
    /// Signals hashed into the fingerprint; order does not matter.
    #[serde(default = "default_signals")]
    pub signals: Vec<String>,
    #[serde(default)]
    pub geoip: Option<GeoIp>,
    #[serde(default)]
    pub claim_binding: Option<ClaimBinding>,
    #[serde(default)]
    pub devices: Option<Devices>,
    #[serde(default)]
    pub countries: Option<Countries>,
    #[serde(default)]
    pub anonymous_networks: Option<AnonymousNetworks>,
    #[serde(default)]
    pub first_seen: Option<FirstSeen>,
}

/// Default `signals`: what a browser or gRPC client sends on every call
/// without being told; country and ASN need GeoIP, the cert thumbprint
/// needs mTLS, so they are opt-in.
pub const DEFAULT_SIGNALS: [&str; 5] = [
    "ja4",
    "user_agent",
    "sec_ch_ua",
    "sec_ch_ua_platform",
    "sec_ch_ua_mobile",
];

/// [`DEFAULT_SIGNALS`] in the form serde fills in.
pub fn default_signals() -> Vec<String> {
    DEFAULT_SIGNALS.into_iter().map(String::from).collect()
}

/// `device.geoip:` MaxMind DB files; relative paths resolve against the
/// config file's folder.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct GeoIp {
    /// GeoIP2/GeoLite2 City or Country database.
    #[serde(default)]
    pub country_db: Option<String>,
    #[serde(default)]
    pub asn_db: Option<String>,
    #[serde(default)]
    pub anonymous_ip_db: Option<String>,
}

/// `device.claim_binding:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ClaimBinding {
    /// Token claim that must equal the fingerprint.
    pub bind_claim: String,
    #[serde(default)]
    pub mode: Mode,
}

/// `device.devices:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Devices {
    #[serde(default)]
    pub mode: Mode,
    /// Fingerprints allowed; empty allows every device not denied.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `device.countries:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Countries {
    #[serde(default)]
    pub mode: Mode,
    /// ISO 3166-1 alpha-2 codes; empty allows every country not denied.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub unknown_country: UnknownCountry,
}

/// `device.anonymous_networks:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AnonymousNetworks {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_anonymous_deny")]
    pub deny: Vec<AnonymousCategory>,
}

/// Default `anonymous_networks.deny`: VPNs, Tor exits and hosting ranges,
/// where a stolen credential is usually replayed from. Public and
/// residential proxies are opt-in (the latter has many false positives on
/// shared home networks).
pub const DEFAULT_ANONYMOUS_DENY: [AnonymousCategory; 3] = [
    AnonymousCategory::Vpn,
    AnonymousCategory::Tor,
    AnonymousCategory::Hosting,
];

/// [`DEFAULT_ANONYMOUS_DENY`] in the form serde fills in.
pub fn default_anonymous_deny() -> Vec<AnonymousCategory> {
    DEFAULT_ANONYMOUS_DENY.to_vec()
}

/// `device.first_seen:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FirstSeen {
    #[serde(default)]
    pub mode: Mode,
    /// How long a binding lives without being seen again (default
    /// [`DEFAULT_TTL`](crate::first_seen::DEFAULT_TTL), whose reason is
    /// given there, beside the store it sizes).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Subjects remembered at most (default
    /// [`DEFAULT_CAPACITY`](crate::first_seen::DEFAULT_CAPACITY)).
    #[serde(default = "default_capacity")]
    pub capacity: usize,
}

// serde's `default = "…"` takes a function, not a constant.
fn default_ttl() -> Duration {
    crate::first_seen::DEFAULT_TTL
}

fn default_capacity() -> usize {
    crate::first_seen::DEFAULT_CAPACITY
}
