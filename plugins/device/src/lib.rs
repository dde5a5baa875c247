//! The `device` filter of ztgate (PRODUCT.md, filter 4): which device is
//! behind a request, and may it make this call?
//!
//! It derives a keyed device fingerprint from chosen signals (JA4 of the TLS
//! ClientHello, client-hint headers, the client certificate thumbprint,
//! GeoIP country and ASN) and applies device policies: token claim binding,
//! device allow/deny lists, country allow/deny, anonymous-network denial and
//! a first-seen binding per subject.
//!
//! Modules, one job each: [`ja4`] (ClientHello → JA4), [`geoip`] (mmdb
//! lookups and reload), [`fingerprint`] (canonical signals → keyed hash),
//! [`first_seen`] (bounded subject → device store), [`policy`] (the pure
//! decision), [`filter`] (the [`ztgate_filter::Filter`] that wires them),
//! [`config`] (the YAML section) and [`build()`] (config → filter).

#![deny(rust_2018_idioms)]
#![warn(clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::indexing_slicing))]

mod build;
pub mod config;
pub mod filter;
pub mod fingerprint;
pub mod first_seen;
pub mod geoip;
pub mod ja4;
mod metrics;
pub mod policy;

pub use build::build;
pub use filter::{DeviceFilter, COUNTRY_HEADER, FINGERPRINT_HEADER};
pub use fingerprint::{Fingerprinter, Secret, Signal, SignalSource};
pub use first_seen::{FirstSeen, Observation};
pub use geoip::{AnonymousFlags, DbKind, GeoInfo, GeoIp, GeoIpError, GeoIpPaths};
pub use ja4::{ClientHello, Ja4Error};
pub use metrics::DECISIONS;
