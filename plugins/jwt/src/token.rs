//! Compact JWS parsing (RFC 7515 §7.1) with no trust attached: the size cap,
//! the three segments, the JOSE header and the claims object.
//!
//! Nothing here looks at a key. The header's `jku`, `x5u`, `x5c` and `jwk`
//! are deliberately not even deserialised: a token must never choose the
//! key it is verified with (RFC 8725 §3.10).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::JwtError;

/// The three segments of a compact JWS, still encoded.
#[derive(Debug, Clone, Copy)]
pub struct CompactJws<'a> {
    /// `header.claims`: the bytes the signature covers.
    pub signing_input: &'a str,
    pub header: &'a str,
    pub claims: &'a str,
    pub signature: &'a str,
}

/// Split a token into its segments, refusing oversized input before any
/// decoding so that a 64 KiB token costs nothing but a length check.
pub fn split(token: &str, max_size: usize) -> Result<CompactJws<'_>, JwtError> {
    if token.len() > max_size {
        return Err(JwtError::TooLarge {
            size: token.len(),
            max: max_size,
        });
    }
    let (signing_input, signature) = token
        .rsplit_once('.')
        .ok_or(JwtError::Malformed("not three dot-separated segments"))?;
    let (header, claims) = signing_input
        .split_once('.')
        .ok_or(JwtError::Malformed("not three dot-separated segments"))?;
    if claims.contains('.') {
        return Err(JwtError::Malformed("not three dot-separated segments"));
    }
    if header.is_empty() || claims.is_empty() {
        return Err(JwtError::Malformed("empty segment"));
    }
    Ok(CompactJws {
        signing_input,
        header,
        claims,
        signature,
    })
}

/// The JOSE header fields policy reads.
#[derive(Debug, Clone, Deserialize)]
pub struct JoseHeader {
    pub alg: String,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
    /// Any value here is refused: we understand no extension (RFC 7515 §4.1.11).
    #[serde(default)]
    pub crit: Option<Value>,
    /// Only read for DPoP proofs, where the key is the point (RFC 9449 §4.2).
    #[serde(default)]
    pub jwk: Option<Map<String, Value>>,
}

impl JoseHeader {
    /// The `alg` as a supported asymmetric algorithm, or refused (`none`,
    /// HMAC and unknown names all end here).
    pub fn algorithm(&self) -> Result<Algorithm, JwtError> {
        parse_asymmetric_alg(&self.alg).ok_or(JwtError::AlgorithmNotAllowed)
    }

    /// Whether `typ` equals `want`, ignoring case and an `application/`
    /// prefix (RFC 7515 §4.1.9).
    pub fn typ_is(&self, want: &str) -> bool {
        self.typ.as_deref().is_some_and(|t| media_type_eq(t, want))
    }
}

/// `a` and `b` name the same media type (`application/` prefix optional).
pub fn media_type_eq(a: &str, b: &str) -> bool {
    fn bare(s: &str) -> &str {
        match s.get(..12) {
            Some(p) if p.eq_ignore_ascii_case("application/") => s.get(12..).unwrap_or(""),
            _ => s,
        }
    }
    bare(a).eq_ignore_ascii_case(bare(b))
}

/// Map an `alg` name to an asymmetric algorithm jsonwebtoken verifies.
/// HMAC is never returned: with a public key as the "secret" it lets anyone
/// forge tokens (the RS256→HS256 key-confusion attack).
pub fn parse_asymmetric_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Decode one base64url (unpadded) segment.
pub fn b64(segment: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed("invalid base64url"))
}

/// Decode and parse the header segment.
pub fn header(jws: &CompactJws<'_>) -> Result<JoseHeader, JwtError> {
    let bytes = b64(jws.header)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed("header is not a JOSE object"))
}

/// Decode and parse the claims segment; it must be a JSON object.
pub fn claims(jws: &CompactJws<'_>) -> Result<Map<String, Value>, JwtError> {
    let bytes = b64(jws.claims)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed("claims are not a JSON object")),
    }
}

/// A NumericDate claim (RFC 7519 §2) as whole seconds; `None` when absent,
/// an error when present but not a number.
pub fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                // Fractional dates are allowed; clamp absurd values.
                Ok(Some(
                    f.floor().clamp(i64::MIN as f64, i64::MAX as f64) as i64
                ))
            } else {
                Err(JwtError::Malformed("date claim is not a number"))
            }
        }
        Some(_) => Err(JwtError::Malformed("date claim is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_needs_exactly_three_segments() {
        assert!(split("a.b.c", 100).is_ok());
        assert!(
            split("a.b.", 100).is_ok(),
            "empty signature parses, alg decides"
        );
        assert_eq!(
            split("a.b", 100).unwrap_err(),
            JwtError::Malformed("not three dot-separated segments")
        );
        assert!(split("abc", 100).is_err());
        assert!(split("a.b.c.d", 100).is_err());
        assert!(split(".b.c", 100).is_err());
    }

    #[test]
    fn size_cap_comes_first() {
        let big = "a".repeat(65 * 1024);
        assert_eq!(
            split(&big, 8192).unwrap_err(),
            JwtError::TooLarge {
                size: big.len(),
                max: 8192
            }
        );
    }

    #[test]
    fn every_prefix_is_an_error_or_ok_never_a_panic() {
        let t = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln";
        for i in 0..=t.len() {
            let _ = split(&t[..i], 100).and_then(|j| header(&j).map(|_| ()));
        }
    }

    #[test]
    fn claims_must_be_an_object() {
        let jws = split("eyJhbGciOiJSUzI1NiJ9.WzFd.c2ln", 100).unwrap(); // [1]
        assert!(claims(&jws).is_err());
        let jws = split("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", 100).unwrap(); // {}
        assert!(claims(&jws).unwrap().is_empty());
    }

    #[test]
    fn hmac_and_none_are_never_algorithms() {
        for a in ["none", "HS256", "HS384", "HS512", "rs256", ""] {
            assert!(parse_asymmetric_alg(a).is_none(), "{a}");
        }
        assert_eq!(parse_asymmetric_alg("ES256"), Some(Algorithm::ES256));
    }

    #[test]
    fn media_types_compare_loosely() {
        assert!(media_type_eq("application/at+JWT", "at+jwt"));
        assert!(media_type_eq("at+jwt", "at+jwt"));
        assert!(!media_type_eq("JWT", "at+jwt"));
    }
}
