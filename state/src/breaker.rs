//! A lock-free circuit breaker.
//!
//! Why: with `timeout: 10ms` and Redis down, every request would otherwise
//! wait the full timeout for every state operation before its
//! `on_unavailable` policy applies: the failure mode that bit Envoy's
//! global rate limit users. After [`BreakerConfig::failure_threshold`]
//! consecutive failures the breaker *opens*: operations are refused at once,
//! without I/O, for a cool-down. When the cool-down has passed it is
//! *half-open*: exactly one operation (the probe) goes through; its success
//! closes the breaker, its failure opens it again for a longer cool-down
//! (doubling, up to [`BreakerConfig::max_cooldown`]), so a long outage costs
//! one slow call per cool-down rather than one per request.
//!
//! The state is two atomics, so the happy path (closed, no failures) is two
//! loads and no write. Time is passed in (`now`, a [`Duration`] since any
//! fixed epoch the caller chooses), which keeps the state machine pure and
//! testable without sleeping.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Consecutive failures that open the breaker. Three, not one: a single
/// timeout (a GC pause of Redis, one lost packet) must not refuse every
/// request for a second; three in a row is an outage, not noise.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// First cool-down after opening: long enough that an outage costs a
/// handful of slow calls per second at most, short enough that recovery is
/// noticed quickly.
pub const DEFAULT_BASE_COOLDOWN: Duration = Duration::from_secs(1);
/// Longest cool-down: doubling stops here, so a store that comes back after
/// a long outage is used again within 10 s.
pub const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(10);

/// Tuning of a [`Breaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// Cool-down after the first opening.
    pub base_cooldown: Duration,
    /// Cap of the doubling cool-down.
    pub max_cooldown: Duration,
    /// How long a half-open probe may stay unanswered before another probe
    /// is let through (a probe whose result is never reported must not keep
    /// the breaker open forever).
    pub probe_lease: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            base_cooldown: DEFAULT_BASE_COOLDOWN,
            max_cooldown: DEFAULT_MAX_COOLDOWN,
            probe_lease: DEFAULT_BASE_COOLDOWN,
        }
    }
}

/// Whether an operation may use the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Pass,
    /// Half-open and this operation is the one probe: go ahead, and report
    /// the result (it decides whether the breaker closes).
    Probe,
    /// Open (or half-open with a probe out): fail without I/O.
    Reject,
}

/// What reporting a result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing.
    None,
    /// The breaker (re)opened for this cool-down.
    Opened(Duration),
    /// A probe succeeded: the breaker is closed again.
    Closed,
}

/// `open_until` value of a closed breaker. Every deadline stored is at
/// least one cool-down after the epoch, so it is never 0.
const CLOSED: u64 = 0;

/// A circuit breaker over atomics. See the module docs.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    /// Consecutive failures of admitted (`Pass`) operations.
    failures: AtomicU32,
    /// [`CLOSED`], or the end (ns since the epoch) of the cool-down or of
    /// the current probe's lease.
    open_until: AtomicU64,
    /// Openings since the breaker was last closed: the cool-down exponent.
    opens: AtomicU32,
    /// When (ns since the epoch) the last counted failure was reported. A
    /// failure of an operation that started before it overlapped the same
    /// stall and is not counted again: one slow moment times out every
    /// operation in flight at once (64 under load), which must count as
    /// one failure, not open the breaker by itself.
    last_counted: AtomicU64,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config: BreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                ..config
            },
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(CLOSED),
            opens: AtomicU32::new(0),
            last_counted: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Whether an operation starting at `now` may use the store.
    pub fn admit(&self, now: Duration) -> Admission {
        let until = self.open_until.load(Ordering::Acquire);
        if until == CLOSED {
            return Admission::Pass;
        }
        let now_ns = nanos(now);
        if now_ns < until {
            return Admission::Reject;
        }
        // Half-open: whoever moves the deadline out by a lease owns the probe.
        let lease_end = now_ns.saturating_add(nanos(self.config.probe_lease)).max(1);
        match self.open_until.compare_exchange(
            until,
            lease_end,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Admission::Probe,
            Err(CLOSED) => Admission::Pass,
            Err(_) => Admission::Reject,
        }
    }

    /// Report that an admitted operation succeeded.
    pub fn on_success(&self, admission: Admission) -> Transition {
        match admission {
            Admission::Pass => {
                // Avoid a write (and cache-line traffic) on the happy path.
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
                Transition::None
            }
            Admission::Probe => {
                self.failures.store(0, Ordering::Relaxed);
                self.opens.store(0, Ordering::Relaxed);
                self.open_until.store(CLOSED, Ordering::Release);
                Transition::Closed
            }
            Admission::Reject => Transition::None,
        }
    }

    /// Report that an admitted operation that started at `started` failed
    /// at `now`.
    pub fn on_failure(&self, admission: Admission, started: Duration, now: Duration) -> Transition {
        match admission {
            Admission::Pass => {
                // Overlapped a failure already counted: the same stall.
                if nanos(started) < self.last_counted.load(Ordering::Acquire) {
                    return Transition::None;
                }
                self.last_counted.fetch_max(nanos(now), Ordering::AcqRel);
                let n = self
                    .failures
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                if n < self.config.failure_threshold {
                    return Transition::None;
                }
                let cooldown = self.cooldown(self.opens.load(Ordering::Relaxed).saturating_add(1));
                let until = nanos(now).saturating_add(nanos(cooldown)).max(1);
                // Only the failure that actually opens it reports the opening
                // (late failures of calls already in flight change nothing).
                match self.open_until.compare_exchange(
                    CLOSED,
                    until,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        self.opens.fetch_add(1, Ordering::Relaxed);
                        self.failures.store(0, Ordering::Relaxed);
                        Transition::Opened(cooldown)
                    }
                    Err(_) => Transition::None,
                }
            }
            Admission::Probe => {
                let opens = self.opens.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                let cooldown = self.cooldown(opens);
                let until = nanos(now).saturating_add(nanos(cooldown)).max(1);
                self.open_until.store(until, Ordering::Release);
                Transition::Opened(cooldown)
            }
            Admission::Reject => Transition::None,
        }
    }

    /// Whether operations starting at `now` are refused (open, or
    /// half-open with the probe out). For `/readyz`-style reporting.
    pub fn is_open(&self, now: Duration) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        until != CLOSED && nanos(now) < until
    }

    /// Cool-down after the `opens`-th consecutive opening (1-based):
    /// `base × 2^(opens-1)`, capped.
    fn cooldown(&self, opens: u32) -> Duration {
        let shift = opens.saturating_sub(1).min(20);
        self.config
            .base_cooldown
            .saturating_mul(1u32 << shift)
            .min(self.config.max_cooldown)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            base_cooldown: ms(1000),
            max_cooldown: ms(5000),
            probe_lease: ms(500),
        })
    }

    #[test]
    fn stays_closed_below_the_threshold_and_success_resets_the_count() {
        let b = breaker();
        let t = ms(10_000);
        for _ in 0..2 {
            assert_eq!(b.admit(t), Admission::Pass);
            assert_eq!(b.on_failure(Admission::Pass, t, t), Transition::None);
        }
        assert_eq!(b.on_success(Admission::Pass), Transition::None);
        for _ in 0..2 {
            assert_eq!(b.on_failure(Admission::Pass, t, t), Transition::None);
        }
        assert_eq!(b.admit(t), Admission::Pass);
        assert!(!b.is_open(t));
    }

    #[test]
    fn failures_of_one_stall_count_once() {
        let b = breaker();
        let stall_start = ms(10_000);
        let stall_end = stall_start + ms(10);
        // 64 operations in flight through one 10 ms stall all time out.
        for _ in 0..64 {
            assert_eq!(
                b.on_failure(Admission::Pass, stall_start, stall_end),
                Transition::None
            );
        }
        assert_eq!(
            b.admit(stall_end),
            Admission::Pass,
            "one stall is one failure"
        );
        // Two more stalls, each of operations started after the last one
        // ended, open it.
        let second = stall_end + ms(1);
        b.on_failure(Admission::Pass, second, second + ms(10));
        let third = second + ms(20);
        assert!(matches!(
            b.on_failure(Admission::Pass, third, third + ms(10)),
            Transition::Opened(_)
        ));
    }

    #[test]
    fn opens_after_consecutive_failures_and_rejects_during_the_cooldown() {
        let b = breaker();
        let t = ms(10_000);
        b.on_failure(Admission::Pass, t, t);
        b.on_failure(Admission::Pass, t, t);
        assert_eq!(
            b.on_failure(Admission::Pass, t, t),
            Transition::Opened(ms(1000))
        );
        assert!(b.is_open(t));
        assert_eq!(b.admit(t), Admission::Reject);
        assert_eq!(b.admit(t + ms(999)), Admission::Reject);
        // Late failures of calls that were already in flight change nothing.
        assert_eq!(
            b.on_failure(Admission::Pass, t + ms(1), t + ms(1)),
            Transition::None
        );
        assert_eq!(b.admit(t + ms(999)), Admission::Reject);
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through_and_its_success_closes() {
        let b = breaker();
        let t = ms(10_000);
        for _ in 0..3 {
            b.on_failure(Admission::Pass, t, t);
        }
        let later = t + ms(1000);
        assert_eq!(b.admit(later), Admission::Probe);
        assert_eq!(b.admit(later), Admission::Reject);
        assert_eq!(b.admit(later + ms(10)), Admission::Reject);
        assert_eq!(b.on_success(Admission::Probe), Transition::Closed);
        assert_eq!(b.admit(later + ms(10)), Admission::Pass);
        assert!(!b.is_open(later));
        // Closed again from zero: it takes the full threshold to reopen, with
        // the base cool-down.
        b.on_failure(Admission::Pass, later, later);
        b.on_failure(Admission::Pass, later, later);
        assert_eq!(
            b.on_failure(Admission::Pass, later, later),
            Transition::Opened(ms(1000))
        );
    }

    #[test]
    fn a_failed_probe_reopens_with_a_doubling_capped_cooldown() {
        let b = breaker();
        let mut t = ms(10_000);
        for _ in 0..3 {
            b.on_failure(Admission::Pass, t, t);
        }
        let mut expected = vec![2000, 4000, 5000, 5000].into_iter();
        let mut cooldown = ms(1000);
        for _ in 0..4 {
            t += cooldown;
            assert_eq!(b.admit(t), Admission::Probe);
            let Transition::Opened(next) = b.on_failure(Admission::Probe, t, t) else {
                panic!("a failed probe must reopen");
            };
            assert_eq!(next, ms(expected.next().unwrap_or_default()));
            assert_eq!(b.admit(t + next - ms(1)), Admission::Reject);
            cooldown = next;
        }
    }

    #[test]
    fn an_unreported_probe_expires_after_its_lease() {
        let b = breaker();
        let t = ms(10_000);
        for _ in 0..3 {
            b.on_failure(Admission::Pass, t, t);
        }
        let half_open = t + ms(1000);
        assert_eq!(b.admit(half_open), Admission::Probe);
        // The probe's caller vanished without reporting.
        assert_eq!(b.admit(half_open + ms(499)), Admission::Reject);
        assert_eq!(b.admit(half_open + ms(500)), Admission::Probe);
    }

    #[test]
    fn a_success_of_an_old_call_does_not_close_an_open_breaker() {
        let b = breaker();
        let t = ms(10_000);
        for _ in 0..3 {
            b.on_failure(Admission::Pass, t, t);
        }
        assert_eq!(b.on_success(Admission::Pass), Transition::None);
        assert_eq!(b.admit(t + ms(1)), Admission::Reject);
    }

    #[test]
    fn rejected_calls_report_nothing() {
        let b = breaker();
        let t = ms(10_000);
        assert_eq!(b.on_failure(Admission::Reject, t, t), Transition::None);
        assert_eq!(b.on_failure(Admission::Reject, t, t), Transition::None);
        assert_eq!(b.on_failure(Admission::Reject, t, t), Transition::None);
        assert_eq!(b.admit(t), Admission::Pass);
        assert_eq!(b.on_success(Admission::Reject), Transition::None);
    }

    #[test]
    fn works_from_the_epoch_and_with_a_threshold_of_zero_treated_as_one() {
        let b = Breaker::new(BreakerConfig {
            failure_threshold: 0,
            ..BreakerConfig::default()
        });
        assert_eq!(
            b.on_failure(Admission::Pass, Duration::ZERO, Duration::ZERO),
            Transition::Opened(DEFAULT_BASE_COOLDOWN)
        );
        assert_eq!(b.admit(Duration::ZERO), Admission::Reject);
        assert_eq!(b.admit(DEFAULT_BASE_COOLDOWN), Admission::Probe);
    }

    #[test]
    fn concurrent_half_open_admits_yield_one_probe() {
        let b = std::sync::Arc::new(breaker());
        let t = ms(10_000);
        for _ in 0..3 {
            b.on_failure(Admission::Pass, t, t);
        }
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || b.admit(t + ms(1000)))
            })
            .collect();
        let probes = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|a| *a == Admission::Probe)
            .count();
        assert_eq!(probes, 1);
    }
}
