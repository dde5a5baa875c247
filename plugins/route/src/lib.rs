//! ztgate's `route` filter: scope- and identity-aware upstream selection
//! (PRODUCT.md, filter 5).
//!
//! A route matches a gRPC method (`match.grpc`: exact, trailing-`*` prefix,
//! or a `*` glob that never crosses `/`; see [`pattern`]) and optionally the
//! `:authority`. The first route in config order that matches serves the
//! request, whatever index found it ([`table`]). Its optional route-level
//! SPIFFE allow-list is checked, then its ordered `select:` list picks the
//! first upstream whose scope rule (`all`/`any`) and SPIFFE rule the caller
//! satisfies ([`select`]).
//!
//! Outcomes:
//! - no route: `no_route` (UNIMPLEMENTED). A route's mode cannot soften this:
//!   no route matched, so there is no route mode and nowhere to forward.
//! - a route-level or select SPIFFE refusal: `identity_not_allowed`, or
//!   `client_cert_missing` when no client certificate was presented;
//! - no select entry fits and some scope rule failed: `scope_missing`;
//! - otherwise `Facts::route` is set to the route and upstream.
//!
//! `mode: shadow` on a route turns its refusals into
//! [`Decision::ShadowDeny`](ztgate_filter::Decision::ShadowDeny) and forwards
//! to the **first** `select` entry's upstream: shadow means the rules are
//! not enforced, and an ordered list with its rules switched off picks its
//! first entry. Operators shadowing a route must therefore let that pool
//! take the route's traffic while the rules are rolled out.

// Input paths must not panic; tests may index.
#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

mod build;
pub mod config;
mod filter;
pub mod pattern;
pub mod select;
pub mod table;
mod trie;

pub use build::build;
pub use filter::RouteFilter;
pub use pattern::{MethodPattern, PatternError};
pub use select::{Caller, ScopeRule, SelectEntry};
pub use table::{CompiledRoute, RouteTable};
pub use ztgate_filter::{SpiffeAllowList, SpiffePattern, SpiffePatternError};

#[cfg(test)]
mod tests;
