//! First-seen device binding: the first fingerprint a subject is seen with
//! is bound to it for a TTL; a different device inside the TTL is a
//! `device_changed` (a stolen token used from another machine).
//!
//! The TTL runs from the moment of binding and is not extended by later
//! requests, so a subject can move to a new device at the latest one TTL
//! after it was bound (a sliding TTL would lock an active user to one
//! device forever).
//!
//! Memory is bounded: an LRU of at most `capacity` subjects. At capacity,
//! binding a new subject evicts the least recently *seen* subject, whose
//! next request then binds afresh to whatever device it comes from. An
//! attacker would need that many distinct valid tokens to push a victim's
//! binding out; size the capacity above the number of subjects active
//! within one TTL.
//!
//! Bindings are memory, not config: the local store is claimed from the
//! gateway's [`ztgate_filter::Memory`] (by capacity) and survives reloads;
//! with `state.backend: redis`, [`Bindings`] keeps them in the shared
//! store so that a binding made on one replica holds on every other.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lru::LruCache;
use ztgate_filter::{Bind, BuildContext, SharedState, StateUse, Unavailable};

/// Default binding lifetime: long enough to cover a working session's
/// burst of calls, short enough that a user who really changes machine is
/// not locked out for long.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);

/// Default number of subjects remembered: about 100k × ~150 bytes
/// ≈ 15 MB at most.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Largest `first_seen.capacity`: ten million subjects is over a gigabyte.
pub const MAX_CAPACITY: usize = 10_000_000;

/// What the store saw for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// No live binding: one was made now (first sight, or the old one expired
    /// or was evicted).
    Bound,
    /// Same device as the binding.
    Same,
    /// Another device inside the binding's TTL. The binding is kept.
    Changed,
}

struct Binding {
    fingerprint: String,
    bound_at: SystemTime,
}

/// Subject → bound fingerprint, bounded LRU (this process only).
pub struct FirstSeen {
    map: Mutex<LruCache<String, Binding>>,
}

impl std::fmt::Debug for FirstSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstSeen")
            .field("len", &self.len())
            .finish()
    }
}

impl FirstSeen {
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            map: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Subjects currently remembered.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check `subject` against its binding and bind it when there is none.
    ///
    /// `is_same` says whether a stored fingerprint is this request's device
    /// (under the current or a previous secret, so that a secret rotation
    /// is not a device change); `current` is what gets stored. A same-device
    /// request under a previous secret is re-stored under the current one,
    /// keeping the original binding time.
    pub fn observe(
        &self,
        subject: &str,
        current: &str,
        is_same: impl Fn(&str) -> bool,
        now: SystemTime,
        ttl: Duration,
    ) -> Observation {
        // A poisoned lock only means another request panicked while holding
        // it; the map itself is still consistent, so keep using it.
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get_mut(subject) {
            let live = now
                .duration_since(b.bound_at)
                .map(|age| age < ttl)
                // A binding "from the future" (clock stepped back) is live.
                .unwrap_or(true);
            if live {
                if is_same(&b.fingerprint) {
                    if b.fingerprint != current {
                        b.fingerprint = current.to_owned();
                    }
                    return Observation::Same;
                }
                return Observation::Changed;
            }
        }
        map.put(
            subject.to_owned(),
            Binding {
                fingerprint: current.to_owned(),
                bound_at: now,
            },
        );
        Observation::Bound
    }
}

/// The shared store has no answer and first-seen is configured to fail
/// closed (`state.on_unavailable.first_seen: deny`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered;

/// First-seen bindings as the filter uses them: in this process, or in
/// the store every replica shares.
#[derive(Debug)]
pub struct Bindings {
    ttl: Duration,
    local: Arc<FirstSeen>,
    shared: Option<SharedState>,
}

impl Bindings {
    /// The bindings of `device.first_seen`: the local store is claimed
    /// from the build context's memory, so a reload keeps it (a changed
    /// `capacity` starts a new one; a changed `ttl` applies to the
    /// bindings already made).
    pub fn new(ttl: Duration, capacity: NonZeroUsize, ctx: &BuildContext) -> Self {
        let local = ctx
            .memory
            .claim(&format!("device.first_seen;{capacity}"), || {
                FirstSeen::new(capacity)
            });
        Self {
            ttl,
            local,
            shared: ctx.state.clone(),
        }
    }

    /// Whether bindings live in the store replicas share.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// [`FirstSeen::observe`], against the shared store when there is one.
    /// If it has no answer, `deny` gives [`Unanswered`] and `allow` uses
    /// this replica's bindings.
    pub async fn observe(
        &self,
        subject: &str,
        current: &str,
        is_same: impl Fn(&str) -> bool,
        now: SystemTime,
    ) -> Result<Observation, Unanswered> {
        if let Some(shared) = &self.shared {
            let key = format!("first_seen:{subject}");
            let store = &shared.store;
            let answer = match store
                .bind(StateUse::FirstSeen, &key, current, self.ttl)
                .await
            {
                Ok(Bind::Bound) => Ok(Observation::Bound),
                Ok(Bind::Existing(bound)) if is_same(&bound) => {
                    if bound != current {
                        // Same device under a rotated secret: store it under
                        // the current one, keeping the binding time. Best
                        // effort: the old value keeps matching meanwhile.
                        let _ = store.rebind(StateUse::FirstSeen, &key, current).await;
                    }
                    Ok(Observation::Same)
                }
                Ok(Bind::Existing(_)) => Ok(Observation::Changed),
                Err(e) => Err(e),
            };
            match answer {
                Ok(o) => return Ok(o),
                Err(e) => {
                    tracing::debug!(error = %e, "first-seen: shared store has no answer");
                    if shared.on_unavailable(StateUse::FirstSeen) == Unavailable::Deny {
                        return Err(Unanswered);
                    }
                }
            }
        }
        Ok(self.local.observe(subject, current, is_same, now, self.ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests' store: `observe` with the default TTL.
    struct Store(FirstSeen);

    impl Store {
        fn observe(
            &self,
            subject: &str,
            current: &str,
            is_same: impl Fn(&str) -> bool,
            now: SystemTime,
        ) -> Observation {
            self.0.observe(subject, current, is_same, now, DEFAULT_TTL)
        }

        fn len(&self) -> usize {
            self.0.len()
        }
    }

    fn store(cap: usize) -> Store {
        Store(FirstSeen::new(NonZeroUsize::new(cap).unwrap()))
    }

    fn eq(fp: &'static str) -> impl Fn(&str) -> bool {
        move |s| s == fp
    }

    #[test]
    fn changed_inside_ttl_then_rebinds_after() {
        let s = store(10);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(s.observe("alice", "A", eq("A"), t0), Observation::Bound);
        assert_eq!(
            s.observe("alice", "A", eq("A"), t0 + Duration::from_secs(60)),
            Observation::Same
        );
        let inside = t0 + DEFAULT_TTL - Duration::from_secs(1);
        assert_eq!(
            s.observe("alice", "B", eq("B"), inside),
            Observation::Changed
        );
        // The denial did not move the binding.
        assert_eq!(s.observe("alice", "A", eq("A"), inside), Observation::Same);
        // The TTL runs from binding, not from the last request.
        let after = t0 + DEFAULT_TTL;
        assert_eq!(s.observe("alice", "B", eq("B"), after), Observation::Bound);
        assert_eq!(
            s.observe("alice", "A", eq("A"), after),
            Observation::Changed
        );
    }

    #[test]
    fn rotation_is_not_a_change() {
        let s = store(10);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        s.observe("bob", "old-fp", eq("old-fp"), t0);
        // Same device, new secret: matcher accepts the old value.
        let same = |fp: &str| fp == "old-fp" || fp == "new-fp";
        assert_eq!(s.observe("bob", "new-fp", same, t0), Observation::Same);
        // Now stored under the new secret.
        assert_eq!(
            s.observe("bob", "new-fp", eq("new-fp"), t0),
            Observation::Same
        );
    }

    #[test]
    fn capacity_evicts_least_recently_seen() {
        let s = store(2);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        s.observe("a", "A", eq("A"), t);
        s.observe("b", "B", eq("B"), t);
        // Touch a, so b is the least recently seen.
        s.observe("a", "A", eq("A"), t);
        s.observe("c", "C", eq("C"), t);
        assert_eq!(s.len(), 2);
        // a survived (touching it again) ...
        assert_eq!(s.observe("a", "Z", eq("Z"), t), Observation::Changed);
        // ... and b was evicted: a new device binds instead of "changed".
        assert_eq!(s.observe("b", "X", eq("X"), t), Observation::Bound);
        assert_eq!(s.len(), 2);
    }
}
