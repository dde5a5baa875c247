//! Latency histograms: one HDR histogram per worker (no sharing on the hot
//! path), merged once at the end, summarised as the percentiles the report
//! shows.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded, in nanoseconds (100 s): anything slower is
/// clamped to this value rather than dropped, so a stall still shows as max.
const MAX_NS: u64 = 100_000_000_000;
/// Three significant figures: 0.1 % error on every percentile.
const SIGFIGS: u8 = 3;

/// The quantiles the report and the plot use.
pub const PLOT_QUANTILES: &[f64] = &[
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0,
];

/// A latency recorder in nanoseconds.
#[derive(Clone, Debug)]
pub struct Recorder {
    h: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        // The bounds are constants that `new_with_bounds` accepts (low 1,
        // high ≥ 2·low, sigfigs ≤ 5): this cannot fail at run time.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, MAX_NS, SIGFIGS).expect("constant bounds are valid");
        Self { h }
    }

    /// Record one latency; values out of range are clamped.
    pub fn record_ns(&mut self, ns: u64) {
        let v = ns.clamp(1, MAX_NS);
        // Clamped into range, so this cannot fail; ignore rather than panic.
        let _ = self.h.record(v);
    }

    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.h.add(&other.h);
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// Latency at quantile `q` (0..=1), in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn summary(&self) -> Latency {
        Latency {
            count: self.count(),
            mean_us: if self.h.is_empty() {
                0.0
            } else {
                self.h.mean() / 1000.0
            },
            p50_us: self.quantile_us(0.5),
            p90_us: self.quantile_us(0.9),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: if self.h.is_empty() {
                0.0
            } else {
                self.h.max() as f64 / 1000.0
            },
            curve: PLOT_QUANTILES
                .iter()
                .map(|&q| [q, self.quantile_us(q)])
                .collect(),
        }
    }
}

/// Latency summary, microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// `[quantile, µs]` pairs for the percentile plot.
    pub curve: Vec<[f64; 2]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut r = Recorder::new();
        for us in 1..=1000u64 {
            r.record_ns(us * 1000);
        }
        let s = r.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() <= 1.0, "p50 {}", s.p50_us);
        assert!((s.p99_us - 990.0).abs() <= 1.0, "p99 {}", s.p99_us);
        assert!((s.max_us - 1000.0).abs() <= 1.0, "max {}", s.max_us);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_tail() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for _ in 0..99 {
            a.record_ns(100_000);
        }
        b.record_ns(50_000_000);
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_us - 100.0).abs() < 0.2);
        assert!((s.max_us - 50_000.0).abs() / 50_000.0 < 0.001);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut r = Recorder::new();
        r.record_ns(0);
        r.record_ns(u64::MAX);
        assert_eq!(r.count(), 2);
        assert!(r.summary().max_us >= 99_000_000.0);
    }

    #[test]
    fn empty_summary_is_zero() {
        let s = Recorder::new().summary();
        assert_eq!(s.count, 0);
        assert_eq!(s.p99_us, 0.0);
    }
}
