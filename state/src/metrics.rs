//! Process-wide Prometheus metrics of the shared state store (names from
//! PRODUCT.md, "State across replicas").
//!
//! Every label value comes from code (`store` from [`StateUse::as_str`],
//! `op` and `result` from the constants below), never from a key or a
//! request, so the series count is fixed: 3 × 4 × 4 counters and 4
//! histograms, all listed from the start by [`register_metrics`].

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use ztgate_filter::StateUse;

/// The `op` label: one per [`ztgate_filter::StateStore`] operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    InsertOnce,
    Bind,
    Rebind,
    Hit,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::InsertOnce, Op::Bind, Op::Rebind, Op::Hit];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::InsertOnce => "insert_once",
            Op::Bind => "bind",
            Op::Rebind => "rebind",
            Op::Hit => "hit",
        }
    }
}

/// The `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    /// The store answered.
    Ok,
    /// No answer within `state.redis.timeout`.
    Timeout,
    /// Refused without I/O: the circuit breaker is open.
    CircuitOpen,
    /// The store answered with an error or the connection failed.
    Error,
}

impl OpResult {
    pub const ALL: [OpResult; 4] = [
        OpResult::Ok,
        OpResult::Timeout,
        OpResult::CircuitOpen,
        OpResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpResult::Ok => "ok",
            OpResult::Timeout => "timeout",
            OpResult::CircuitOpen => "circuit_open",
            OpResult::Error => "error",
        }
    }
}

/// Histogram buckets, 100 µs to 1 s: a healthy same-zone Redis answers in
/// the lowest buckets; the configured timeout (≤ 1 s) is the top.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// `ztgate_state_ops_total{store,op,result}`.
pub static OPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = metric(IntCounterVec::new(
        Opts::new(
            "ztgate_state_ops_total",
            "Shared-state operations by use (dpop, first_seen, ratelimit), operation and result (ok, timeout, circuit_open, error)",
        ),
        &["store", "op", "result"],
    ));
    let _ = prometheus::register(Box::new(c.clone()));
    c
});

/// `ztgate_state_op_duration_seconds{op}`: time of the operations that
/// reached the store (refusals by the open breaker are not timed: they
/// would only pile up at zero and hide the store's latency).
pub static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = metric(HistogramVec::new(
        HistogramOpts::new(
            "ztgate_state_op_duration_seconds",
            "Time of shared-state operations that reached the store, by operation",
        )
        .buckets(DURATION_BUCKETS.to_vec()),
        &["op"],
    ));
    let _ = prometheus::register(Box::new(h.clone()));
    h
});

// The names, labels and buckets are constants, so `new` can only fail on a
// typo caught by the first test; registration fails only if another copy of
// this crate registered first, in which case the unregistered metric still
// counts.
#[allow(clippy::expect_used)]
fn metric<T>(m: prometheus::Result<T>) -> T {
    m.expect("valid metric definition")
}

/// Register both metrics with the default registry and create every label
/// combination, so that `/metrics` lists them (at 0) from the start and a
/// dashboard or alert never sees a series appear out of nowhere.
pub fn register_metrics() {
    for store in StateUse::ALL {
        for op in Op::ALL {
            for result in OpResult::ALL {
                OPS.with_label_values(&[store.as_str(), op.as_str(), result.as_str()]);
            }
        }
    }
    for op in Op::ALL {
        DURATION.with_label_values(&[op.as_str()]);
    }
}

/// Count one operation, and time it unless the breaker refused it.
pub(crate) fn record(store: StateUse, op: Op, result: OpResult, took: Duration) {
    OPS.with_label_values(&[store.as_str(), op.as_str(), result.as_str()])
        .inc();
    if result != OpResult::CircuitOpen {
        DURATION
            .with_label_values(&[op.as_str()])
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_listed_after_registration() {
        register_metrics();
        let families = prometheus::gather();
        let ops = families
            .iter()
            .find(|f| f.name() == "ztgate_state_ops_total")
            .unwrap();
        assert_eq!(ops.get_metric().len(), 3 * 4 * 4);
        let durations = families
            .iter()
            .find(|f| f.name() == "ztgate_state_op_duration_seconds")
            .unwrap();
        assert_eq!(durations.get_metric().len(), 4);
    }
}
