//! State shared across replicas (`state: { backend: redis }`).
//!
//! With several replicas behind a load balancer, three guarantees only hold
//! if the replicas share what they remember: a DPoP proof replayed to
//! another replica must be refused (RFC 9449 §11.1), a first-seen device
//! binding must hold cluster-wide, and a limit of N must not become
//! N × replicas. [`StateStore`] is the seam those filters use; the gateway
//! wires an implementation (Redis, in `ztgate-state`) from the `state:`
//! section. With `backend: memory` (the default) there is no store and
//! each filter keeps its own in-process structure.
//!
//! Every operation is atomic on the store side and one round trip, and
//! every implementation must bound its latency (a timeout, and a circuit
//! breaker so that an outage does not cost every call the timeout): a
//! store that is down or slow never hangs a request. What a failure means
//! is the caller's choice, per use ([`OnUnavailable`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// Which guarantee an operation serves: the `store` label of
/// `ztgate_state_ops_total` and the key of `state.on_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateUse {
    /// The DPoP `jti` replay cache.
    Dpop,
    /// First-seen device bindings.
    FirstSeen,
    /// Rate-limit counters.
    RateLimit,
}

impl StateUse {
    pub const ALL: [StateUse; 3] = [StateUse::Dpop, StateUse::FirstSeen, StateUse::RateLimit];

    pub fn as_str(self) -> &'static str {
        match self {
            StateUse::Dpop => "dpop",
            StateUse::FirstSeen => "first_seen",
            StateUse::RateLimit => "ratelimit",
        }
    }
}

/// Why a shared-state operation has no answer. Never the caller's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// No answer within `state.redis.timeout`.
    #[error("state store timed out")]
    Timeout,
    /// Recent operations failed; the store is not tried until the breaker
    /// half-opens (so an outage does not cost every call the timeout).
    #[error("state store unavailable (circuit open)")]
    CircuitOpen,
    /// The store answered with an error, or the connection failed.
    #[error("state store error: {0}")]
    Backend(String),
}

/// What [`StateStore::bind`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// There was no live binding; the value given is now bound.
    Bound,
    /// A live binding exists with this value; nothing was changed.
    Existing(String),
}

/// One counted hit in a fixed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Hits in the current window, this one included.
    pub count: u64,
    /// Until the current window ends.
    pub resets_in: Duration,
}

/// An operation that can be batched with others ([`StateStore::batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateOp {
    /// [`StateStore::insert_once`].
    InsertOnce { key: String, ttl: Duration },
    /// [`StateStore::hit`].
    Hit { key: String, window: Duration },
}

/// The answer to one [`StateOp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAnswer {
    /// `insert_once`: whether the key was new.
    Inserted(bool),
    /// `hit`: the window's count.
    Hit(Hit),
}

/// A shared, atomic key-value store for security state. Keys are logical
/// (`dpop:…`); the implementation adds its configured prefix.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + fmt::Debug {
    /// The backend's name for `explain` and logs (`redis`).
    fn backend(&self) -> &'static str;

    /// Record `key` for `ttl` unless it is already recorded: `Ok(true)` the
    /// first time, `Ok(false)` for every later use within the TTL.
    async fn insert_once(
        &self,
        used_by: StateUse,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, StateError>;

    /// Bind `key` to `value` for `ttl` unless a live binding exists, which
    /// is returned instead. The TTL runs from binding and is not extended.
    async fn bind(
        &self,
        used_by: StateUse,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Bind, StateError>;

    /// Replace the value of a live binding, keeping its expiry (a device
    /// seen again under a rotated fingerprint secret). No-op if absent.
    async fn rebind(&self, used_by: StateUse, key: &str, value: &str) -> Result<(), StateError>;

    /// Count one hit for `key` in a fixed window of `window` that starts
    /// at the key's first hit.
    async fn hit(&self, used_by: StateUse, key: &str, window: Duration) -> Result<Hit, StateError>;

    /// Several operations at once, answered in order. Each stays atomic;
    /// together they should cost one round trip (a pipeline). The default
    /// runs them one after the other.
    async fn batch(&self, ops: &[(StateUse, StateOp)]) -> Vec<Result<StateAnswer, StateError>> {
        let mut out = Vec::with_capacity(ops.len());
        for (used_by, op) in ops {
            out.push(match op {
                StateOp::InsertOnce { key, ttl } => self
                    .insert_once(*used_by, key, *ttl)
                    .await
                    .map(StateAnswer::Inserted),
                StateOp::Hit { key, window } => {
                    self.hit(*used_by, key, *window).await.map(StateAnswer::Hit)
                }
            });
        }
        out
    }
}

/// What a use does when the store has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavailable {
    /// Refuse the call: 14 UNAVAILABLE `state_unavailable`.
    Deny,
    /// Let it through (rate limits fall back to the local limiter).
    Allow,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::Deny => "deny",
            Unavailable::Allow => "allow",
        }
    }
}

/// `state.on_unavailable`, per use. Defaults: a replay or device check
/// that cannot be made refuses (fail closed: those are security checks);
/// a rate limit that cannot be counted falls back to the local limiter
/// (fail open: a store outage must not become a full outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnUnavailable {
    pub dpop: Unavailable,
    pub first_seen: Unavailable,
    pub ratelimit: Unavailable,
}

impl Default for OnUnavailable {
    fn default() -> Self {
        Self {
            dpop: Unavailable::Deny,
            first_seen: Unavailable::Deny,
            ratelimit: Unavailable::Allow,
        }
    }
}

impl OnUnavailable {
    pub fn for_use(&self, u: StateUse) -> Unavailable {
        match u {
            StateUse::Dpop => self.dpop,
            StateUse::FirstSeen => self.first_seen,
            StateUse::RateLimit => self.ratelimit,
        }
    }
}

/// The shared store and its failure policy, handed to filter builds.
#[derive(Debug, Clone)]
pub struct SharedState {
    pub store: Arc<dyn StateStore>,
    pub on_unavailable: OnUnavailable,
}

impl SharedState {
    /// What `use_` does on a failure.
    pub fn on_unavailable(&self, use_: StateUse) -> Unavailable {
        self.on_unavailable.for_use(use_)
    }
}
