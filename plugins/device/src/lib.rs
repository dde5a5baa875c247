//! The `device` filter of ztgate (PRODUCT.md, filter 4): who is the device
//! behind a request?
//!
//! It derives a keyed device fingerprint from chosen signals (JA4 of the TLS
//! ClientHello, client-hint headers, the client certificate thumbprint,
//! GeoIP country and ASN) and applies device policies: token claim binding,
//! device allow/deny lists, country allow/deny, anonymous-network denial and
//! a first-seen binding per subject.

#![deny(rust_2018_idioms)]
#![warn(clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::indexing_slicing))]

pub mod fingerprint;
pub mod first_seen;
pub mod geoip;
pub mod ja4;
pub mod policy;

pub use fingerprint::{Fingerprinter, Secret, Signal, SignalSource};
pub use first_seen::{FirstSeen, Observation};
pub use geoip::{AnonymousFlags, DbKind, GeoInfo, GeoIp, GeoIpError, GeoIpPaths};
pub use ja4::{ClientHello, Ja4Error};
