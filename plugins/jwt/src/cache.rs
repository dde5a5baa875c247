//! The verified-token cache: token → its verified form.
//!
//! Signature verification dominates the cost of a request (tens of µs for
//! RS256), while a client reuses one token for minutes. Entries are bounded
//! and never served at or after the token's `exp`; binding checks
//! (RFC 8705, DPoP) are not cached and still run on every request.
//!
//! Keyed by the token itself, compared whole on a hit, and hashed with a
//! per-process random key (ahash): a lookup costs a fast hash of ~700
//! bytes, not a SHA-256 of them, which was 85% of a cache hit's
//! instructions (callgrind, `examples/cache_hit_cost.rs`, a 608-byte RS256
//! token: 40.4k → 6.5k instructions per hit). A collision costs a
//! comparison, never another token's verdict.
//! The cache is `quick_cache`'s concurrent one (sharded, CLOCK-Pro
//! eviction), so hits on many workers do not serialise on one lock (an
//! LRU `get` mutates, so a `Mutex<LruCache>` did).
//!
//! The cache outlives a reload (it is claimed from the gateway's memory by
//! its capacity). Each entry carries the tag of the issuer policy it was
//! verified under; the filter serves it only while the issuer's policy
//! still has that tag, so a reload that tightens audiences, algorithms or
//! `typ` re-verifies instead of serving an entry the new policy refuses.

use std::sync::Arc;
use std::time::SystemTime;

use crate::verify::Verified;

/// A verified token and the tag of the issuer policy it passed.
#[derive(Clone)]
pub struct Cached {
    pub verified: Arc<Verified>,
    pub policy_tag: u64,
}

/// Bounded concurrent cache of verified tokens; capacity 0 disables it.
pub struct TokenCache {
    inner: Option<quick_cache::sync::Cache<Arc<str>, Cached>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    /// The verified `token`, unless absent or expired at `now`.
    pub fn get(&self, token: &str, now: SystemTime) -> Option<Cached> {
        let cache = self.inner.as_ref()?;
        let hit = cache.get(token)?;
        if hit.verified.token.expires_at() <= now {
            cache.remove(token);
            return None;
        }
        Some(hit)
    }

    pub fn insert(&self, token: &str, entry: Cached) {
        if let Some(c) = &self.inner {
            c.insert(Arc::from(token), entry);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
