//! The `routes:` list exactly as written in YAML: pure serde data. Nothing
//! here is checked beyond its shape; [`crate::build`] turns it into a
//! [`crate::RouteFilter`] and reports every problem with its key path.

use serde::Deserialize;
use ztgate_filter::Mode;

/// One entry of `routes:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Route {
    /// Unique; the `route` label of metrics and the audit log.
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: Match,
    /// `enforce` (default) or `shadow`: a shadow route records its denials
    /// and still forwards (see the crate docs for where).
    #[serde(default)]
    pub mode: Mode,
    /// Route-level SPIFFE ID allow-list. Absent: any (or no) identity.
    #[serde(default)]
    pub spiffe: Option<Vec<String>>,
    /// Ordered; the first entry the request satisfies wins.
    pub select: Vec<Select>,
    /// This route's own rule for the `policy` filter (read by that filter,
    /// not by routing). Absent: the `policy:` section's `decision`.
    #[serde(default)]
    pub policy: Option<RoutePolicy>,
}

/// `routes[].policy:`: which rule of the loaded Rego decides this route's
/// calls, so one policy bundle can hold a stricter rule for `Refund` than
/// for `GetOrder` without an `if input.route == …` ladder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RoutePolicy {
    /// A rule path under `data.`, like `policy.decision`.
    pub decision: String,
}

/// `match:` of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Match {
    /// `SERVICE[/METHOD]`, exact, trailing-`*` prefix or `*` glob.
    pub grpc: String,
    /// `:authority` to match (case-insensitive, port ignored). Absent: any.
    #[serde(default)]
    pub authority: Option<String>,
}

/// One entry of a route's `select:` list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Select {
    #[serde(default)]
    pub scopes: Option<Scopes>,
    #[serde(default)]
    pub spiffe: Option<Vec<String>>,
    /// Name of a pool under `upstreams:`.
    pub upstream: String,
}

/// `scopes: { all: [...] }` or `scopes: { any: [...] }` (exactly one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Scopes {
    #[serde(default)]
    pub all: Option<Vec<String>>,
    #[serde(default)]
    pub any: Option<Vec<String>>,
}
