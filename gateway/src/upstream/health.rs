//! Per-backend health: the active checker's verdict, passive ejection and
//! the in-flight count, all atomics so the request path never locks.
//!
//! A reload builds new pools, but the backends are the same machines: state
//! is shared through a process-wide registry keyed by (pool, address), so a
//! new generation inherits what the old one knew instead of starting blind
//! (an unhealthy backend stays out across a reload; a new one starts in).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

/// Monotonic origin for the millisecond timestamps kept in atomics.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since [`EPOCH`].
pub fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

type Key = (Arc<str>, SocketAddr);

/// Live state of every backend of every generation still referenced.
static REGISTRY: LazyLock<Mutex<HashMap<Key, Weak<BackendHealth>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// What is known about one backend.
#[derive(Debug)]
pub struct BackendHealth {
    /// Verdict of the active checks (true until they say otherwise).
    active_ok: AtomicBool,
    /// Consecutive probe successes / failures, for the thresholds.
    rise: AtomicU32,
    fall: AtomicU32,
    /// A probe of this backend is under way (checks never overlap).
    probing: AtomicBool,
    /// Consecutive connect failures seen by the proxy.
    connect_failures: AtomicU32,
    /// Passively ejected until this [`now_ms`] value.
    ejected_until: AtomicU64,
    /// Calls currently using this backend.
    in_flight: AtomicUsize,
}

impl Default for BackendHealth {
    fn default() -> Self {
        Self {
            active_ok: AtomicBool::new(true),
            rise: AtomicU32::new(0),
            fall: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            connect_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }
}

impl BackendHealth {
    /// The state for `addr` in pool `pool`: the one a previous generation
    /// uses if any, else a fresh (healthy) one.
    pub fn shared(pool: &str, addr: SocketAddr) -> Arc<BackendHealth> {
        let key: Key = (Arc::from(pool), addr);
        let Ok(mut reg) = REGISTRY.lock() else {
            // A panic elsewhere poisoned the lock: lose sharing, not service.
            return Arc::new(BackendHealth::default());
        };
        if let Some(h) = reg.get(&key).and_then(Weak::upgrade) {
            return h;
        }
        reg.retain(|_, w| w.strong_count() > 0);
        let h = Arc::new(BackendHealth::default());
        reg.insert(key, Arc::downgrade(&h));
        h
    }

    /// Whether selection may pick this backend now.
    pub fn available(&self, active_checks: bool, now: u64) -> bool {
        (!active_checks || self.active_ok.load(Ordering::Relaxed))
            && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn acquire(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn release(&self) {
        // Saturating: never wrap even if a guard were released twice.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// A connect failure; ejects the backend for `ejection` once `limit`
    /// consecutive ones are seen (`limit == 0`: never). Returns whether this
    /// call ejected it.
    pub fn connect_failed(&self, limit: u32, ejection: Duration) -> bool {
        if limit == 0 {
            return false;
        }
        let n = self.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < limit {
            return false;
        }
        self.connect_failures.store(0, Ordering::Relaxed);
        let ms = u64::try_from(ejection.as_millis()).unwrap_or(u64::MAX);
        self.ejected_until
            .store(now_ms().saturating_add(ms), Ordering::Relaxed);
        true
    }

    pub fn connect_succeeded(&self) {
        if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Claim the right to probe; false if a probe is still running.
    pub fn start_probe(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    /// Record a probe result against the thresholds. Returns the new
    /// verdict when it changed.
    pub fn probe_done(&self, ok: bool, rise_at: u32, fall_at: u32) -> Option<bool> {
        self.probing.store(false, Ordering::Release);
        let was = self.active_ok.load(Ordering::Relaxed);
        if ok {
            self.fall.store(0, Ordering::Relaxed);
            let n = self.rise.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if !was && n >= rise_at {
                self.active_ok.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.rise.store(0, Ordering::Relaxed);
            let n = self.fall.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if was && n >= fall_at {
                self.active_ok.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }
}

/// A backend chosen for one call: counts as in flight until dropped (the
/// request context holds it, so every way a request ends releases it).
#[derive(Debug)]
pub struct Lease {
    pub addr: SocketAddr,
    health: Arc<BackendHealth>,
}

impl Lease {
    pub(super) fn new(addr: SocketAddr, health: Arc<BackendHealth>) -> Self {
        health.acquire();
        Self { addr, health }
    }

    pub fn health(&self) -> &BackendHealth {
        &self.health
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.health.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_take_out_and_bring_back() {
        let h = BackendHealth::default();
        assert!(h.available(true, now_ms()));
        assert_eq!(h.probe_done(false, 2, 2), None);
        assert_eq!(h.probe_done(false, 2, 2), Some(false));
        assert!(!h.available(true, now_ms()));
        // Without active checks the verdict is ignored.
        assert!(h.available(false, now_ms()));
        assert_eq!(h.probe_done(true, 2, 2), None);
        assert_eq!(h.probe_done(false, 2, 2), None, "streak restarts");
        assert_eq!(h.probe_done(true, 2, 2), None);
        assert_eq!(h.probe_done(true, 2, 2), Some(true));
        assert!(h.available(true, now_ms()));
    }

    #[test]
    fn consecutive_connect_failures_eject_for_a_while() {
        let h = BackendHealth::default();
        let d = Duration::from_secs(10);
        assert!(!h.connect_failed(3, d));
        assert!(!h.connect_failed(3, d));
        h.connect_succeeded();
        assert!(!h.connect_failed(3, d));
        assert!(!h.connect_failed(3, d));
        assert!(h.connect_failed(3, d));
        let now = now_ms();
        assert!(!h.available(false, now));
        assert!(h.available(false, now + 10_001));
        assert!(!h.connect_failed(0, d), "0 disables ejection");
    }

    #[test]
    fn leases_count_in_flight_and_state_is_shared_per_pool_and_address() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a = BackendHealth::shared("health-test", addr);
        let b = BackendHealth::shared("health-test", addr);
        let other = BackendHealth::shared("health-test-2", addr);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other));
        let l1 = Lease::new(addr, a.clone());
        let l2 = Lease::new(addr, b.clone());
        assert_eq!(a.in_flight(), 2);
        drop(l1);
        drop(l2);
        assert_eq!(a.in_flight(), 0);
        a.release();
        assert_eq!(a.in_flight(), 0, "never wraps");
    }
}
