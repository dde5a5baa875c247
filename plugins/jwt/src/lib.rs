//! The `jwt` filter of ztgate: OAuth 2.0 access tokens as JWTs (RFC 9068),
//! validated to RFC 8725 (JWT BCP), with OIDC discovery and JWKS, RFC 8705
//! certificate-bound tokens and RFC 9449 DPoP.
//!
//! Layout, one job per module:
//! - [`config`]: the `jwt:` YAML section and its defaults; [`build()`]: the
//!   runtime filter made from it.
//! - [`token`]: compact JWS parsing with no trust attached.
//! - [`keys`]: JWKs bound to their algorithms, JWKS documents, RFC 7638 thumbprints.
//! - [`verify`]: the pure validation core (time passed in, no I/O) and the
//!   [`IssuerPolicy`] it applies.
//! - [`jwks`]: the per-issuer async key store (fetch, refresh, single-flight refetch).
//! - [`cnf`]: RFC 8705 binding; [`dpop`]: RFC 9449 proofs and the replay cache.
//! - [`signature`]: JWS signature checks with OpenSSL, keys parsed once.
//! - [`cache`]: the verified-token cache; [`filter`]: the [`JwtFilter`] itself.
//!
//! OpenSSL does the signature math; `jsonwebtoken` only lends its
//! `Algorithm` names; every policy decision is here.

// Input paths must not panic: no indexing that can be out of bounds.
#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

mod build;
pub mod cache;
pub mod cnf;
pub mod config;
pub mod dpop;
pub mod error;
pub mod filter;
pub mod jwks;
pub mod keys;
pub mod metrics;
pub mod signature;
pub mod token;
pub mod verify;

pub use build::build;
pub use error::JwtError;
pub use filter::{FilterSettings, JwtFilter, Scheme};
pub use jwks::{FetchError, KeySource, KeyStore};
pub use verify::{IssuerPolicy, Verified};
