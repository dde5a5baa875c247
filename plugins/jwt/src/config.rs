//! The `jwt:` section exactly as written in the YAML file: pure serde data,
//! and the defaults of the keys left out, each with its reason.
//!
//! Nothing here is validated beyond its shape; [`crate::build`] turns it
//! into the runtime form and reports every problem with its key path.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use ztgate_filter::Mode;

/// Default token size cap: real access tokens are 1–2 KiB; 8 KiB leaves room
/// for rich claims while keeping a parsing DoS cheap.
pub const DEFAULT_MAX_TOKEN_SIZE: usize = 8 * 1024;
/// Default verified-token cache size: a few MiB for a busy edge.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Largest `cache_capacity`: the LRU reserves its table up front, so an
/// absurd value would abort the process at build time (found by fuzzing
/// the config); ten million tokens is gigabytes already.
pub const MAX_CACHE_CAPACITY: usize = 10_000_000;
/// Clock skew tolerated on `exp`/`nbf`/`iat` (a common IdP default).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// JWKS refresh bounds around Cache-Control max-age: 5 minutes keeps a
/// rotation visible quickly, 1 hour bounds how long a removed key lives.
pub const DEFAULT_REFRESH_MIN: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_REFRESH_MAX: Duration = Duration::from_secs(60 * 60);
/// At most one unknown-`kid` refetch per issuer per interval, so a storm of
/// forged `kid`s cannot turn the gateway into a DoS on the IdP.
pub const DEFAULT_UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);
/// IdP calls must not hang startup or a request waiting on a refetch.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 9449 §11.1 suggests a short window; 60 s tolerates modest skew.
pub const DEFAULT_DPOP_WINDOW: Duration = Duration::from_secs(60);
/// Algorithms accepted when the config names none.
pub const DEFAULT_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];
/// Where scopes are looked for, in order (RFC 9068 `scope`, Azure/Okta `scp`).
pub const DEFAULT_SCOPE_CLAIMS: [&str; 3] = ["scope", "scp", "scopes"];

/// `jwt:`: the bearer-token filter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct JwtSection {
    #[serde(default)]
    pub mode: Mode,
    /// Tokens longer than this are refused before any parsing (default 8 KiB).
    #[serde(default)]
    pub max_token_size: Option<usize>,
    /// Verified tokens kept in memory (default 10 000).
    #[serde(default)]
    pub cache_capacity: Option<usize>,
    /// A request without a token is denied `token_missing` (default true).
    #[serde(default)]
    pub required: Option<bool>,
    #[serde(default)]
    pub issuers: Vec<Issuer>,
}

/// One trusted token issuer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Issuer {
    /// The exact `iss` value of its tokens.
    pub issuer: String,
    /// Find the JWKS through `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// Fetch the JWKS from this URL.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// A static JWKS file (no network).
    #[serde(default)]
    pub keys_file: Option<String>,
    /// Plain `http://` discovery/JWKS URLs, allowed only on loopback hosts.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// `aud` must contain one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `alg` values; asymmetric only (default `[RS256, ES256]`).
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Accepted `typ` header values (e.g. `[at+jwt]`); absent accepts any.
    #[serde(default)]
    pub typ: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    pub leeway: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claims scopes are read from, first present wins (default `[scope, scp, scopes]`).
    #[serde(default)]
    pub scope_claims: Option<Vec<String>>,
    /// Keep `authorization` on the upstream request (default false).
    #[serde(default)]
    pub forward_token: bool,
    #[serde(default)]
    pub cert_binding: CertBinding,
    #[serde(default)]
    pub dpop: DpopMode,
    /// How far a DPoP proof's `iat` may be from now (default 60s); also the
    /// lifetime of a `jti` in the replay cache.
    #[serde(default, with = "humantime_serde")]
    pub dpop_window: Option<Duration>,
    #[serde(default)]
    pub jwks_refresh: Option<RefreshBounds>,
    #[serde(default, with = "humantime_serde")]
    pub unknown_kid_refetch_interval: Option<Duration>,
    /// Extra CA (PEM) trusted for the discovery/JWKS HTTPS calls.
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub http_timeout: Option<Duration>,
}

/// RFC 8705 certificate binding (`cnf.x5t#S256`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertBinding {
    /// Every token must be bound to the client certificate.
    Require,
    /// A bound token must match; an unbound one is accepted.
    #[default]
    IfPresent,
    /// `cnf.x5t#S256` is not checked.
    Off,
}

/// RFC 9449 DPoP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpopMode {
    /// Every token must be DPoP-bound and come with a valid proof.
    Require,
    /// DPoP-bound tokens need a proof, plain bearer tokens are accepted.
    Allow,
    /// No DPoP; a DPoP-bound token is refused (its binding cannot be checked).
    #[default]
    Off,
}

/// `jwks_refresh: {min, max}`: bounds around the IdP's Cache-Control max-age.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RefreshBounds {
    #[serde(default, with = "humantime_serde")]
    pub min: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max: Option<Duration>,
}
