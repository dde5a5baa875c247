//! ztgate's `policy` filter (PRODUCT.md, filter 7): fine-grained
//! authorization in Rego, the Open Policy Agent language, evaluated
//! in-process with [regorus](https://github.com/microsoft/regorus) instead
//! of a network hop to an OPA sidecar (Envoy `ext_authz`).
//!
//! - [`input`] builds the input document once per request from what the
//!   earlier filters proved ([`ztgate_filter::Facts`]) and the request
//!   itself, straight into regorus values (no JSON text in between).
//! - [`engine`] holds the policy compiled once per config generation and
//!   evaluates it under a time budget.
//! - [`decision`] is the pure mapping from what the policy answered to a
//!   [`ztgate_filter::Decision`]: `true`/`false` or `{allow, reason}`; an
//!   error, a budget overrun or an answer of another shape is refused with
//!   `policy_error`, never allowed.
//!
//! A reload (a Rego or data file changed on disk) builds a new generation;
//! a policy that does not compile is a config problem naming its file and
//! line, so the old generation keeps serving.

// Input paths must not panic; tests may index.
#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

mod build;
pub mod config;
pub mod decision;
pub mod engine;
mod filter;
pub mod input;
mod metrics;

pub use build::{build, RouteRule};
pub use filter::{Explained, PolicyFilter};

#[cfg(test)]
mod tests;
