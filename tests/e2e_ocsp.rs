#![allow(clippy::unwrap_used, clippy::expect_used)]
//! OCSP (placeholder while written).
