//! Shared parts for `ztgate demo`, the end-to-end tests and the load tests:
//! a throw-away PKI ([`pki`]), the sample `orders.v1.Orders` gRPC backend
//! ([`backend`]), client helpers ([`client`]) and a SPIFFE Workload API
//! server ([`workload_api`]).
//!
//! Everything here is real: real X.509 certificates, a real tonic server
//! speaking h2c, a real tonic client doing TLS with a client certificate.

pub mod backend;
pub mod client;
pub mod dpop;
pub mod harness;
pub mod idp;
pub mod ocsp;
pub mod otlp;
pub mod pki;
pub mod redis;
pub mod wait;
pub mod workload_api;

use std::path::PathBuf;

/// Where the shared test data (GeoIP test databases, JA4 vectors) lives:
/// `ZTGATE_TESTDATA` when set (CI and checkouts laid out differently),
/// else `shared/testdata` beside the repository. One definition, so that
/// unit tests, benches and end-to-end tests cannot disagree on it.
pub fn testdata() -> PathBuf {
    std::env::var_os("ZTGATE_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata"
            ))
        })
}

/// Generated code of `proto/orders.proto`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod proto {
    tonic::include_proto!("orders.v1");
}
