//! `ztgate_policy_decisions_total{decision,result}`: what each decision
//! rule answered. The filter's time is already in
//! `ztgate_filter_duration_seconds{filter="policy"}` and its denials in
//! `ztgate_requests_total{reason}`; this counter is what those cannot say:
//! which rule (the section's or a route's) decided, and how often a policy
//! fails to decide at all (`error`: the operator's bug).
//!
//! Label values come from config (the rule path) or code (`result`),
//! never from a request, so the series count stays bounded.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, Opts};
use ztgate_filter::{Decision, Reason};

static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    // The names and labels are constants: `new` fails only on a typo the
    // first test catches; registration fails only if another copy of this
    // crate registered first, and then this counter still counts.
    #[allow(clippy::expect_used)]
    let c = IntCounterVec::new(
        Opts::new(
            "ztgate_policy_decisions_total",
            "Policy evaluations per decision rule, by result (allow, deny, error)",
        ),
        &["decision", "result"],
    )
    .expect("valid metric definition");
    let _ = prometheus::register(Box::new(c.clone()));
    c
});

static CACHE: LazyLock<[IntCounter; 2]> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // as for DECISIONS
    let c = IntCounterVec::new(
        Opts::new(
            "ztgate_policy_decision_cache_total",
            "Policy decision-cache lookups, by result (hit, miss)",
        ),
        &["result"],
    )
    .expect("valid metric definition");
    let _ = prometheus::register(Box::new(c.clone()));
    [
        c.with_label_values(&["hit"]),
        c.with_label_values(&["miss"]),
    ]
});

/// Count one decision-cache lookup.
pub(crate) fn cache(hit: bool) {
    let [h, m] = &*CACHE;
    if hit { h } else { m }.inc();
}

/// The three series of one decision rule, resolved when the generation is
/// built: counted on every evaluation, where `with_label_values` would
/// hash the labels and take the vec's lock each time.
#[derive(Debug, Clone)]
pub(crate) struct RuleCounters {
    allow: IntCounter,
    deny: IntCounter,
    error: IntCounter,
}

impl RuleCounters {
    pub(crate) fn new(decision: &str) -> Self {
        let of = |result: &str| DECISIONS.with_label_values(&[decision, result]);
        Self {
            allow: of("allow"),
            deny: of("deny"),
            error: of("error"),
        }
    }

    pub(crate) fn count(&self, d: &Decision) {
        match d {
            Decision::Deny(x) | Decision::ShadowDeny(x) if x.reason == Reason::PolicyError => {
                &self.error
            }
            Decision::Deny(_) | Decision::ShadowDeny(_) => &self.deny,
            Decision::Continue => &self.allow,
        }
        .inc();
    }
}
