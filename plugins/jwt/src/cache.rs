//! The verified-token cache: SHA-256 of the token → its verified form.
//!
//! Signature verification dominates the cost of a request (tens of µs for
//! RS256), while a client reuses one token for minutes. Entries are bounded
//! (LRU) and never served at or after the token's `exp`; binding checks
//! (RFC 8705, DPoP) are not cached and still run on every request.
//!
//! The cache outlives a reload (it is claimed from the gateway's memory by
//! its capacity). Each entry carries the tag of the issuer policy it was
//! verified under; the filter serves it only while the issuer's policy
//! still has that tag, so a reload that tightens audiences, algorithms or
//! `typ` re-verifies instead of serving an entry the new policy refuses.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::SystemTime;

use lru::LruCache;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::verify::Verified;

/// The cache key: a token is never stored, only its hash.
pub type TokenHash = [u8; 32];

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A verified token and the tag of the issuer policy it passed.
#[derive(Clone)]
pub struct Cached {
    pub verified: Arc<Verified>,
    pub policy_tag: u64,
}

/// Bounded LRU of verified tokens; capacity 0 disables it.
pub struct TokenCache {
    inner: Option<Mutex<LruCache<TokenHash, Cached>>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
        }
    }

    /// The verified token, unless absent or expired at `now`.
    pub fn get(&self, key: &TokenHash, now: SystemTime) -> Option<Cached> {
        let mut lru = self.inner.as_ref()?.lock();
        let hit = lru.get(key)?;
        if hit.verified.token.expires_at() <= now {
            lru.pop(key);
            return None;
        }
        Some(hit.clone())
    }

    pub fn insert(&self, key: TokenHash, entry: Cached) {
        if let Some(m) = &self.inner {
            m.lock().put(key, entry);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |m| m.lock().len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
