//! `ztgate_device_decisions_total{policy,result}`: one count per configured
//! policy per request. `policy` is a [`PolicyKind`] name and `result` one of
//! `allow`, `skip`, `deny`, `shadow_deny`: both from code, never from
//! request data, so the label set is bounded (5 × 4).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, Opts};

use crate::policy::{Outcome, PolicyKind};

pub static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "ztgate_device_decisions_total",
        "Device policy verdicts, by policy and result (allow, skip, deny, shadow_deny)",
        &["policy", "result"],
    )
});

// The name and labels are constants, so `new` can only fail on a typo
// caught by the first test; registration fails only if another copy of this
// crate registered first, in which case the unregistered counter still counts.
#[allow(clippy::expect_used)]
fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

pub(crate) fn record(policy: PolicyKind, outcome: &Outcome) {
    DECISIONS
        .with_label_values(&[policy.as_str(), outcome.as_str()])
        .inc();
}
