//! Memory that outlives a config generation.
//!
//! A reload builds every filter afresh from the new config, but what the
//! gateway has *learned* — an issuer's signing keys, the verified-token
//! cache, DPoP `jti`s already seen, first-seen device bindings, rate-limit
//! windows — belongs to the thing it is about (an issuer, a rule), not to
//! the generation that happened to build it. Forgetting it on reload opens
//! a replay window on every certificate rotation.
//!
//! [`Memory`] is the registry a build claims such state from, by an
//! identity key: the first generation that asks creates it, the next
//! generation that asks with the same key gets the *same* object. Entries
//! are held weakly: state lives as long as some generation still uses it,
//! so once a reload drops the issuer or rule it belongs to (no new claim)
//! and the old generation is released, the state goes with it. The same
//! pattern as the gateway's backend health registry, but owned by the
//! process's reload loop rather than being a global, so `check`, `explain`
//! and tests each get their own.
//!
//! The key says what the state means. A key that includes the settings
//! that change the state's meaning (a rate-limit rule's limit and window,
//! a key store's source URL) makes a changed rule start afresh while an
//! unchanged one carries over.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

type Entry = Weak<dyn Any + Send + Sync>;

/// Long-lived state shared by successive config generations; see the
/// module docs.
#[derive(Default)]
pub struct Memory {
    entries: Mutex<HashMap<(TypeId, String), Entry>>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("entries", &self.len())
            .finish()
    }
}

impl Memory {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The state of type `T` known by `key`: the one a live generation
    /// already uses, else a new one from `make`.
    ///
    /// Keys are namespaced by type, so two filters cannot collide by
    /// choosing the same string for different kinds of state.
    pub fn claim<T: Any + Send + Sync>(&self, key: &str, make: impl FnOnce() -> T) -> Arc<T> {
        match self.try_claim(key, || Ok::<T, std::convert::Infallible>(make())) {
            Ok(t) => t,
            Err(never) => match never {},
        }
    }

    /// [`Memory::claim`] for state whose creation can fail: nothing is
    /// remembered on failure.
    pub fn try_claim<T: Any + Send + Sync, E>(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        let id = (TypeId::of::<T>(), key.to_owned());
        // A poisoned lock means a panic elsewhere while holding it; the map
        // is still consistent (every update is one insert or retain).
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = entries.get(&id).and_then(Weak::upgrade) {
            if let Ok(t) = live.downcast::<T>() {
                return Ok(t);
            }
        }
        entries.retain(|_, w| w.strong_count() > 0);
        let fresh = Arc::new(make()?);
        let erased: Arc<dyn Any + Send + Sync> = fresh.clone();
        entries.insert(id, Arc::downgrade(&erased));
        Ok(fresh)
    }

    /// Pieces of state some generation still holds.
    pub fn len(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.values().filter(|w| w.strong_count() > 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn same_key_same_state_while_held() {
        let m = Memory::default();
        let a = m.claim("rule:a", || AtomicU32::new(0));
        a.fetch_add(5, Ordering::Relaxed);
        // The next generation claims while the old one still holds it.
        let b = m.claim("rule:a", || AtomicU32::new(0));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.load(Ordering::Relaxed), 5);
        // A different key (a changed rule) starts afresh.
        let c = m.claim("rule:a;limit=9", || AtomicU32::new(0));
        assert_eq!(c.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn released_state_is_forgotten() {
        let m = Memory::default();
        let a = m.claim("issuer", || AtomicU32::new(7));
        drop(a);
        assert!(m.is_empty());
        let b = m.claim("issuer", || AtomicU32::new(1));
        assert_eq!(b.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn keys_are_namespaced_by_type() {
        let m = Memory::default();
        let a = m.claim("x", || AtomicU32::new(3));
        let b = m.claim("x", || String::from("s"));
        assert_eq!(a.load(Ordering::Relaxed), 3);
        assert_eq!(*b, "s");
        assert_eq!(m.len(), 2);
    }
}
