//! One compiled rule: its window counter and how it finds its key.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use pingora_limits::rate::Rate;

use crate::raw::Key;

/// Count-min sketch shape per window. pingora-limits' default of 1024 slots
/// over-counts once a window sees more than a few thousand distinct keys
/// (a collision adds another key's requests to yours, so a quiet caller can
/// be limited). With 16384 slots a key's expected over-count stays below
/// N / 16384 for N requests in a window (e.g. under 7 at 100k requests),
/// for 4 × 16384 × 8 B × 2 windows = 1 MiB per rule.
const SKETCH_HASHES: usize = 4;
const SKETCH_SLOTS: usize = 16_384;

/// A rule of the `ratelimit` section, with its live counter.
pub(crate) struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) key: Key,
    pub(crate) route: Option<Arc<str>>,
    limit: isize,
    rate: Rate,
}

/// The outcome of counting one request against one rule.
pub(crate) enum Count {
    Allowed,
    /// Over the limit; the current window ends after this long.
    Exceeded(Duration),
}

impl Rule {
    pub(crate) fn new(
        name: &str,
        key: Key,
        route: Option<&str>,
        limit: u32,
        interval: Duration,
    ) -> Self {
        Self {
            name: Arc::from(name),
            key,
            route: route.map(Arc::from),
            limit: isize::try_from(limit).unwrap_or(isize::MAX),
            rate: Rate::new_with_estimator_config(interval, SKETCH_HASHES, SKETCH_SLOTS),
        }
    }

    /// Count one request for `key`. Refused requests count too, so a caller
    /// hammering through its limit stays limited until the window ends.
    pub(crate) fn count<K: Hash>(&self, key: &K) -> Count {
        if self.rate.observe(key, 1) <= self.limit {
            return Count::Allowed;
        }
        Count::Exceeded(self.rate.rate_with(key, |c| {
            c.interval
                .mul_f64((1.0 - c.current_interval_fraction).clamp(0.0, 1.0))
        }))
    }
}
