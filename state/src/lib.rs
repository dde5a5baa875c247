//! Shared state across replicas: the `state:` section of the config and
//! the Redis implementation of [`ztgate_filter::StateStore`].
//!
//! With several replicas behind a load balancer, a DPoP proof replayed to
//! another replica, a device binding and a rate limit only hold if the
//! replicas share what they remember (PRODUCT.md, "State across
//! replicas"). The filters only see the [`ztgate_filter::StateStore`]
//! seam; this crate turns `state:` into a [`ztgate_filter::SharedState`]:
//!
//! ```text
//! raw::StateSection ──build::build──▶ Option<SharedState>   (None = memory)
//!                                       └ store: RedisStore
//! ```
//!
//! * [`raw`]: the YAML shape (serde), defaults.
//! * [`mod@build`]: validation with key paths; no I/O, no runtime needed.
//! * [`redis`]: [`RedisStore`]: one atomic round trip per operation,
//!   bounded by a timeout and a circuit breaker, on its own runtime.
//! * [`breaker`]: the lock-free circuit breaker (pure, injected time).
//! * [`metrics`]: `ztgate_state_ops_total`, `ztgate_state_op_duration_seconds`.

pub mod breaker;
pub mod build;
pub mod metrics;
pub mod raw;
pub mod redis;

pub use build::{build, build_store, check, Built, RedisConfig};
pub use metrics::register_metrics;
pub use raw::StateSection;
pub use redis::{RedisStore, StoreError};
