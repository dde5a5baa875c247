//! ztgate's `ratelimit` filter (PRODUCT.md, filter 6): at most `limit`
//! requests per `interval` per identity (token subject per issuer, SPIFFE
//! ID, device fingerprint or client IP), optionally only on one route.
//!
//! Counting uses pingora-limits' [`Rate`](pingora_limits::rate::Rate): a
//! fixed window per rule that starts when the previous one has run out,
//! counted in a count-min sketch (lock-free, constant memory, may over-count
//! on hash collisions, never under-counts). Over the limit the request is
//! refused with `rate_limited` (RESOURCE_EXHAUSTED / 429), the denial
//! carrying the `retry-after` wait.
//!
//! Counters outlive a reload, and with `state.backend: redis` they are
//! shared by every replica (see [`RateLimitFilter`]).
//!
//! A request that lacks a rule's identity is not counted by that rule.

// Input paths must not panic; tests may index.
#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

mod build;
pub mod config;
mod filter;
mod rule;

pub use build::{build, check_route_names, MAX_INTERVAL, MIN_INTERVAL};
pub use filter::RateLimitFilter;

#[cfg(test)]
mod tests;
