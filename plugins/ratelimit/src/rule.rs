//! One compiled rule: its window counter and how it finds its key.
//!
//! The counter is memory, not config: it is claimed from the gateway's
//! [`Memory`] by everything that gives a count its meaning (name, key,
//! route, limit, interval), so a reload carries every window over, and a
//! rule whose meaning changed starts afresh.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora_limits::rate::Rate;
use ztgate_filter::Memory;

use crate::config::Key;

/// Count-min sketch shape per window. pingora-limits' default of 1024 slots
/// over-counts once a window sees more than a few thousand distinct keys
/// (a collision adds another key's requests to yours, so a quiet caller can
/// be limited). With 16384 slots a key's expected over-count stays below
/// N / 16384 for N requests in a window (e.g. under 7 at 100k requests),
/// for 4 × 16384 × 8 B × 2 windows = 1 MiB per rule.
const SKETCH_HASHES: usize = 4;
const SKETCH_SLOTS: usize = 16_384;

/// Identities remembered as over their limit (shared-store mode), per
/// rule. Past this many, expired entries are dropped, then all of them: the
/// cache only saves round trips, it decides nothing on its own.
const OVER_LIMIT_CAPACITY: usize = 10_000;

/// What a rule remembers across reloads.
struct Counters {
    /// This process's window counter.
    rate: Rate,
    /// With a shared store: identities known to be over the limit until
    /// their window ends, so a hot abuser costs no round trip.
    over: Mutex<HashMap<String, Instant>>,
}

/// A rule of the `ratelimit` section, with its live counter. Cheap to
/// clone: a deferred count keeps its rule.
#[derive(Clone)]
pub(crate) struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) key: Key,
    pub(crate) route: Option<Arc<str>>,
    limit: isize,
    pub(crate) interval: Duration,
    counters: Arc<Counters>,
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
        memory: &Memory,
    ) -> Self {
        let identity = format!(
            "ratelimit.rule\n{name}\n{key:?}\n{route:?}\n{limit}\n{}",
            interval.as_millis()
        );
        let counters = memory.claim(&identity, || Counters {
            rate: Rate::new_with_estimator_config(interval, SKETCH_HASHES, SKETCH_SLOTS),
            over: Mutex::new(HashMap::new()),
        });
        Self {
            name: Arc::from(name),
            key,
            route: route.map(Arc::from),
            limit: isize::try_from(limit).unwrap_or(isize::MAX),
            interval,
            counters,
        }
    }

    /// The limit as an unsigned count (for the shared store's counter).
    pub(crate) fn limit(&self) -> u64 {
        u64::try_from(self.limit).unwrap_or(u64::MAX)
    }

    /// How long `identity` is still known to be over the limit, if it is.
    pub(crate) fn known_over(&self, identity: &str, now: Instant) -> Option<Duration> {
        let over = self.counters.over.lock().unwrap_or_else(|e| e.into_inner());
        over.get(identity)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Remember that `identity` is over the limit for `wait`.
    pub(crate) fn mark_over(&self, identity: &str, now: Instant, wait: Duration) {
        let mut over = self.counters.over.lock().unwrap_or_else(|e| e.into_inner());
        if over.len() >= OVER_LIMIT_CAPACITY {
            over.retain(|_, until| *until > now);
            if over.len() >= OVER_LIMIT_CAPACITY {
                over.clear();
            }
        }
        over.insert(identity.to_owned(), now + wait);
    }

    /// Count one request for `key`. Refused requests count too, so a caller
    /// hammering through its limit stays limited until the window ends.
    pub(crate) fn count<K: Hash>(&self, key: &K) -> Count {
        let rate = &self.counters.rate;
        if rate.observe(key, 1) <= self.limit {
            return Count::Allowed;
        }
        Count::Exceeded(rate.rate_with(key, |c| {
            c.interval
                .mul_f64((1.0 - c.current_interval_fraction).clamp(0.0, 1.0))
        }))
    }
}
