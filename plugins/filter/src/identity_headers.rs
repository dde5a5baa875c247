//! The identity headers ztgate asserts to upstreams, listed once.
//!
//! Upstreams trust these headers because only the gateway sets them
//! (PRODUCT.md "What the upstream receives"). That holds only if a client's
//! copy never gets through, whatever `pipeline:` says: the gateway removes
//! every reserved header from every request before the chain runs
//! (PRODUCT.md "Request hygiene"), and the filters that set them name them
//! from here, so the list that is stripped and the list that is asserted
//! cannot drift apart.
//!
//! Reserved: every header starting with [`PREFIX`] (`x-ztgate-*`, which
//! covers the SPIFFE ID, subject, issuer, scopes, GeoIP country and the
//! signed assertion), plus [`FORWARDED_CLIENT_CERT`] and
//! [`DEVICE_FINGERPRINT`], whose names are not ours to prefix.

use http::{HeaderMap, HeaderName};

/// Prefix of every header the gateway asserts under its own name. The whole
/// prefix is reserved, not just the names in use today, so a header added
/// by a later release (or another gateway in the path) can never be forged
/// through an older pipeline.
pub const PREFIX: &str = "x-ztgate-";

/// The peer's SPIFFE ID (`mtls`).
pub const SPIFFE_ID: HeaderName = HeaderName::from_static("x-ztgate-spiffe-id");
/// The token's `sub` (`jwt`).
pub const SUBJECT: HeaderName = HeaderName::from_static("x-ztgate-subject");
/// The token's `iss` (`jwt`).
pub const ISSUER: HeaderName = HeaderName::from_static("x-ztgate-issuer");
/// The token's scopes, space-separated (`jwt`).
pub const SCOPES: HeaderName = HeaderName::from_static("x-ztgate-scopes");
/// The client's GeoIP country (`device`).
pub const GEO_COUNTRY: HeaderName = HeaderName::from_static("x-ztgate-geo-country");
/// The gateway-signed identity assertion (the gateway, after the chain).
pub const ASSERTION: HeaderName = HeaderName::from_static("x-ztgate-assertion");
/// The peer certificate in Envoy's XFCC format (`mtls`).
pub const FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// The keyed device fingerprint (`device`).
pub const DEVICE_FINGERPRINT: HeaderName = HeaderName::from_static("x-device-fingerprint");

/// Reserved names outside [`PREFIX`].
pub static UNPREFIXED: [HeaderName; 2] = [FORWARDED_CLIENT_CERT, DEVICE_FINGERPRINT];

/// Every named header the gateway may set (for docs and tests; the reserved
/// set is wider: the whole [`PREFIX`]).
pub static ASSERTED: [HeaderName; 8] = [
    SPIFFE_ID,
    SUBJECT,
    ISSUER,
    SCOPES,
    GEO_COUNTRY,
    ASSERTION,
    FORWARDED_CLIENT_CERT,
    DEVICE_FINGERPRINT,
];

/// Whether a client may never send `name`. Header names are lowercase in
/// `http` (and on the HTTP/2 wire), so a plain comparison is exact.
pub fn is_reserved(name: &HeaderName) -> bool {
    name.as_str().starts_with(PREFIX) || UNPREFIXED.contains(name)
}

/// The reserved headers present in `headers`, each once, in the map's order.
/// The gateway removes them from the request itself (through Pingora's
/// `RequestHeader::remove_header`, which also keeps its case map in step),
/// so this only names them.
pub fn reserved_in(headers: &HeaderMap) -> Vec<HeaderName> {
    // `keys()` yields each name once, however many values it has.
    headers.keys().filter(|n| is_reserved(n)).cloned().collect()
}

/// Remove every reserved header from a plain map (for `ztgate explain`,
/// which builds its request as a `HeaderMap`); returns how many names went.
pub fn strip(headers: &mut HeaderMap) -> usize {
    let names = reserved_in(headers);
    for n in &names {
        headers.remove(n);
    }
    names.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_contract_names_are_reserved() {
        for n in [
            "x-ztgate-spiffe-id",
            "x-ztgate-subject",
            "x-ztgate-issuer",
            "x-ztgate-scopes",
            "x-ztgate-geo-country",
            "x-ztgate-assertion",
            "x-ztgate-anything-added-later",
            "x-forwarded-client-cert",
            "x-device-fingerprint",
        ] {
            assert!(is_reserved(&HeaderName::from_static(n)), "{n}");
        }
        for n in &ASSERTED {
            assert!(is_reserved(n), "{n}");
        }
        for n in [
            "x-request-id",
            "authorization",
            "dpop",
            "traceparent",
            "x-ztgate",
            "x-forwarded-for",
            "user-agent",
        ] {
            assert!(!is_reserved(&HeaderName::from_static(n)), "{n}");
        }
    }

    #[test]
    fn strip_removes_every_value_of_every_reserved_name() {
        let mut h = HeaderMap::new();
        h.append("x-ztgate-subject", HeaderValue::from_static("root"));
        h.append("x-ztgate-subject", HeaderValue::from_static("admin"));
        h.append("x-device-fingerprint", HeaderValue::from_static("forged"));
        h.append("x-ztgate-geo-country", HeaderValue::from_static("US"));
        h.append("x-request-id", HeaderValue::from_static("r1"));
        // Names are case-insensitive: `http` lowercases them on parse.
        h.append(
            HeaderName::from_bytes(b"X-Forwarded-Client-Cert").unwrap(),
            HeaderValue::from_static("Hash=00"),
        );
        assert_eq!(reserved_in(&h).len(), 4);
        assert_eq!(strip(&mut h), 4);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-request-id"));
    }
}
