//! The `policy:` section exactly as written in YAML: pure serde data.
//! [`crate::build`] checks it, compiles the Rego and turns it into a
//! [`crate::PolicyFilter`].

use std::time::Duration;

use serde::Deserialize;
use ztgate_filter::Mode;

/// Where the decision is read when `decision:` is left out: the
/// convention of PRODUCT.md, a rule `decision` in `package ztgate`.
pub const DEFAULT_DECISION: &str = "data.ztgate.decision";

/// Why 10 ms: a request policy over the facts of one call runs in
/// microseconds; a policy still running after 10 ms is looping over data it
/// should index, and every request it holds waits with it. Long enough
/// that a loaded machine (a descheduled thread) does not turn a healthy
/// policy into `policy_error`.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(10);

/// Why a million: the 20-rule benchmark policy executes a few hundred
/// bytecode instructions; a million, at roughly 10 ns each, is about
/// [`DEFAULT_BUDGET`], and unlike time it does not depend on how loaded
/// the machine is.
pub const DEFAULT_MAX_INSTRUCTIONS: usize = 1_000_000;

/// `policy:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Policy {
    /// `shadow` evaluates and records what the policy would have denied.
    #[serde(default)]
    pub mode: Mode,
    /// Rego modules (`.rego` files), at least one.
    pub rego: Vec<String>,
    /// JSON documents merged at the root of `data` (a key defined twice is
    /// an error).
    #[serde(default)]
    pub data: Vec<String>,
    /// The rule whose value is the decision: `true`/`false` or
    /// `{allow, reason}`.
    #[serde(default = "default_decision")]
    pub decision: String,
    /// Token claims copied into `input.claims` (by name; the raw token is
    /// never part of the input).
    #[serde(default)]
    pub input_claims: Vec<String>,
    /// Request headers copied into `input.headers` (lowercase names;
    /// `authorization` and `dpop` are refused: they carry credentials).
    #[serde(default)]
    pub input_headers: Vec<String>,
    /// Longest one evaluation may run; over it the request is refused with
    /// `policy_error` (see [`DEFAULT_BUDGET`]).
    #[serde(default = "default_budget", with = "humantime_serde")]
    pub budget: Duration,
    /// Most bytecode instructions one evaluation may execute (see
    /// [`DEFAULT_MAX_INSTRUCTIONS`]); over it, `policy_error`.
    #[serde(default = "default_max_instructions")]
    pub max_instructions: usize,
    /// Decisions remembered per decision rule, by input document (0: off);
    /// see [`DEFAULT_DECISION_CACHE`].
    #[serde(default = "default_decision_cache")]
    pub decision_cache: usize,
}

/// Why 10,000: a decision is a pure function of the input document and
/// the generation's Rego and data, and one client repeats the same input
/// call after call (same workload, token, device, route, method); an entry
/// is the input's encoding (a few hundred bytes) and the decision, so
/// 10,000 entries are a few MiB. A generation (a Rego or data change)
/// starts with an empty cache; policies that read the clock, randomness or
/// the network are never cached.
pub const DEFAULT_DECISION_CACHE: usize = 10_000;

fn default_decision_cache() -> usize {
    DEFAULT_DECISION_CACHE
}

fn default_decision() -> String {
    DEFAULT_DECISION.to_owned()
}

fn default_budget() -> Duration {
    DEFAULT_BUDGET
}

fn default_max_instructions() -> usize {
    DEFAULT_MAX_INSTRUCTIONS
}
