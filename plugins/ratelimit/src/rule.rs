//! One compiled rule: its window counter and how it finds its key.
//!
//! The counter is memory, not config: it is claimed from the gateway's
//! [`Memory`] by everything that gives a count its meaning (name, key,
//! route, limit, interval), so a reload carries every window over, and a
//! rule whose meaning changed starts afresh.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora_limits::estimator::Estimator;
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
    window: Window,
    /// With a shared store: identities known to be over the limit until
    /// their window ends (on the requests' clock), so a hot abuser costs no
    /// round trip.
    over: Mutex<HashMap<String, SystemTime>>,
}

/// Per-key counts in fixed windows (one window for all keys of the rule),
/// on the clock the request carries ([`ztgate_filter::RequestView::now`])
/// rather than one it reads itself: the limiter then answers for the
/// instant the gateway stamped on the request, as the other filters do,
/// and its tests step time instead of sleeping through a window.
///
/// The windows are those of pingora-limits' `Rate`, which this replaces
/// because `Rate` reads `Instant::now()` inside: a window lasts `interval`
/// and the next one opens with the first request after it ended (there is
/// no fixed grid; the shared store's windows, too, open at a first hit).
/// Two count-min sketches take turns, so that the one being cleared for a
/// new window is not the one being counted in.
struct Window {
    sketches: [Estimator; 2],
    /// Which sketch counts the current window.
    second: AtomicBool,
    interval_ms: u64,
    /// When the current window opened, in ms since the Unix epoch; 0 until
    /// the first request.
    opened_ms: AtomicU64,
}

impl Window {
    fn new(interval: Duration) -> Self {
        Self {
            sketches: [
                Estimator::new(SKETCH_HASHES, SKETCH_SLOTS),
                Estimator::new(SKETCH_HASHES, SKETCH_SLOTS),
            ],
            second: AtomicBool::new(false),
            interval_ms: millis(interval).max(1),
            opened_ms: AtomicU64::new(0),
        }
    }

    /// Count one request for `key` at `now`: the key's count in the window
    /// `now` falls in (this request included), and how long that window
    /// still runs.
    fn observe<K: Hash>(&self, key: &K, now: SystemTime) -> (isize, Duration) {
        let now_ms = millis(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        let opened = self.roll(now_ms);
        let count = self.sketch(self.second.load(Ordering::SeqCst)).incr(key, 1);
        // A request stamped a little before the window opened (it waited
        // in an earlier filter while another one opened it) counts in it
        // and is told the whole window.
        let into = now_ms.saturating_sub(opened);
        (
            count,
            Duration::from_millis(self.interval_ms.saturating_sub(into)),
        )
    }

    fn sketch(&self, second: bool) -> &Estimator {
        let [first, other] = &self.sketches;
        if second {
            other
        } else {
            first
        }
    }

    /// Open a new window when `now_ms` is past the current one. Returns
    /// when the window that counts `now_ms` opened.
    fn roll(&self, now_ms: u64) -> u64 {
        let opened = self.opened_ms.load(Ordering::SeqCst);
        if now_ms.saturating_sub(opened) < self.interval_ms {
            return opened;
        }
        match self
            .opened_ms
            .compare_exchange(opened, now_ms, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => {
                let next = !self.second.load(Ordering::SeqCst);
                self.sketch(next).reset();
                self.second.store(next, Ordering::SeqCst);
                now_ms
            }
            // Another request opened the new window first.
            Err(theirs) => theirs,
        }
    }
}

/// Whole milliseconds, saturating (a window of 584 million years is long
/// enough).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
            window: Window::new(interval),
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

    /// How long `identity` is still known to be over the limit at `now`,
    /// if it is.
    pub(crate) fn known_over(&self, identity: &str, now: SystemTime) -> Option<Duration> {
        let over = self.counters.over.lock().unwrap_or_else(|e| e.into_inner());
        over.get(identity)
            .and_then(|until| until.duration_since(now).ok())
            .filter(|d| !d.is_zero())
    }

    /// Remember that `identity` is over the limit for `wait` from `now`.
    pub(crate) fn mark_over(&self, identity: &str, now: SystemTime, wait: Duration) {
        let Some(until) = now.checked_add(wait) else {
            return;
        };
        let mut over = self.counters.over.lock().unwrap_or_else(|e| e.into_inner());
        if over.len() >= OVER_LIMIT_CAPACITY {
            over.retain(|_, until| *until > now);
            if over.len() >= OVER_LIMIT_CAPACITY {
                over.clear();
            }
        }
        over.insert(identity.to_owned(), until);
    }

    /// Count one request for `key` at `now` (the request's own time).
    /// Refused requests count too, so a caller hammering through its limit
    /// stays limited until the window ends.
    pub(crate) fn count<K: Hash>(&self, key: &K, now: SystemTime) -> Count {
        let (count, left) = self.counters.window.observe(key, now);
        if count <= self.limit {
            Count::Allowed
        } else {
            Count::Exceeded(left)
        }
    }
}
