//! Shared parts for `ztgate demo`, the end-to-end tests and the load tests:
//! a throw-away PKI ([`pki`]), the sample `orders.v1.Orders` gRPC backend
//! ([`backend`]) and client helpers ([`client`]).
//!
//! Everything here is real: real X.509 certificates, a real tonic server
//! speaking h2c, a real tonic client doing TLS with a client certificate.

pub mod backend;
pub mod client;
pub mod dpop;
pub mod harness;
pub mod idp;
pub mod pki;
pub mod redis;

/// Generated code of `proto/orders.proto`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod proto {
    tonic::include_proto!("orders.v1");
}
