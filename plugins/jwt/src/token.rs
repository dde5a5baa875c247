//! Compact JWS parsing (RFC 7515 §7.1) with no trust attached: the size cap,
//! the three segments, the JOSE header and the claims object.
//!
//! Nothing here looks at a key. The header's `jku`, `x5u`, `x5c` and `jwk`
//! are deliberately not even deserialised: a token must never choose the
//! key it is verified with (RFC 8725 §3.10).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

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

/// The JOSE header fields policy reads, borrowed from the header's text.
#[derive(Debug, Clone, Deserialize)]
pub struct JoseHeader<'a> {
    #[serde(borrow)]
    pub alg: JsonStr<'a>,
    #[serde(default, borrow)]
    pub typ: Option<JsonStr<'a>>,
    #[serde(default, borrow)]
    pub kid: Option<JsonStr<'a>>,
    /// Any value here is refused: we understand no extension (RFC 7515 §4.1.11).
    #[serde(default, borrow)]
    pub crit: Option<&'a RawValue>,
    /// Only read for DPoP proofs, where the key is the point (RFC 9449 §4.2).
    #[serde(default, borrow)]
    pub jwk: Option<&'a RawValue>,
}

impl JoseHeader<'_> {
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

/// Decode the header segment into its JSON text (read by [`header`]).
pub fn header_json(jws: &CompactJws<'_>) -> Result<String, JwtError> {
    String::from_utf8(b64(jws.header)?)
        .map_err(|_| JwtError::Malformed("header is not a JOSE object"))
}

/// Parse a header's JSON text.
pub fn header(json: &str) -> Result<JoseHeader<'_>, JwtError> {
    serde_json::from_str(json).map_err(|_| JwtError::Malformed("header is not a JOSE object"))
}

/// Decode the claims segment into its JSON text (checked as a claims
/// object by [`ClaimsView::parse`]).
pub fn claims_json(jws: &CompactJws<'_>) -> Result<String, JwtError> {
    String::from_utf8(b64(jws.claims)?).map_err(|_| JwtError::Malformed("claims are not UTF-8"))
}

/// A claims object read without building a JSON tree: each member's name
/// and its raw JSON text. A token's few registered claims are then read
/// one by one; the rest are only checked to be well-formed JSON. Parsing
/// every claim into a `serde_json::Map` cost a new token ≈ 10k
/// instructions, more than every claim rule together.
#[derive(Debug)]
pub struct ClaimsView<'a> {
    json: &'a str,
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// The content of a JSON string token without escapes (`"abc"` → `abc`),
/// or `None` (another kind of value, or escapes: serde decodes those). The
/// token was validated as JSON, so what lies between the quotes is text.
fn plain_str(token: &str) -> Option<&str> {
    let inner = token.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// An object's members in order, names unescaped (borrowed when they have
/// no escapes), values left as their JSON text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// A JSON string, borrowed when it has no escapes.
#[derive(Debug, Clone, Deserialize)]
pub struct JsonStr<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl std::ops::Deref for JsonStr<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(12));
                while let Some((JsonStr(k), v)) = m.next_entry::<JsonStr<'de>, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

impl<'a> ClaimsView<'a> {
    /// `json` must be one JSON object and nothing else.
    pub fn parse(json: &'a str) -> Result<Self, JwtError> {
        let Members(members) = serde_json::from_str(json)
            .map_err(|_| JwtError::Malformed("claims are not a JSON object"))?;
        Ok(Self { json, members })
    }

    /// The whole object's JSON text.
    pub fn json(&self) -> &'a str {
        self.json
    }

    /// The JSON text of claim `name`. A repeated name reads as its last
    /// value, as a JSON object parse would (RFC 7519 §4 allows either that
    /// or refusing the token).
    pub fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    /// Claim `name` when it is present and not `null`.
    pub fn present(&self, name: &str) -> bool {
        self.raw(name).is_some_and(|v| v.get() != "null")
    }

    /// A string claim: `Ok(None)` when absent, an error when present but
    /// not a string.
    pub fn str(&self, name: &str) -> Result<Option<Cow<'a, str>>, JwtError> {
        self.raw(name)
            .map(|v| match plain_str(v.get()) {
                Some(s) => Ok(Cow::Borrowed(s)),
                None => serde_json::from_str::<JsonStr<'a>>(v.get())
                    .map(|JsonStr(t)| t)
                    .map_err(|_| JwtError::Malformed("claim is not a string")),
            })
            .transpose()
    }

    /// Claim `name` as a JSON value (for the claims whose shape varies:
    /// `aud`, scopes, `cnf`).
    pub fn value(&self, name: &str) -> Option<Value> {
        self.raw(name)
            .and_then(|v| serde_json::from_str(v.get()).ok())
    }

    /// A NumericDate claim (RFC 7519 §2) as whole seconds; `None` when
    /// absent, an error when present but not a number.
    pub fn numeric_date(&self, name: &'static str) -> Result<Option<i64>, JwtError> {
        let Some(v) = self.raw(name) else {
            return Ok(None);
        };
        // A whole number, the usual case, without a deserializer. The text
        // is one JSON value, so only a JSON integer parses here.
        if let Ok(i) = v.get().parse::<i64>() {
            return Ok(Some(i));
        }
        let n: serde_json::Number = serde_json::from_str(v.get())
            .map_err(|_| JwtError::Malformed("date claim is not a number"))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

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
            let _ = split(&t[..i], 100)
                .and_then(|j| header_json(&j))
                .and_then(|h| header(&h).map(|_| ()));
        }
    }

    #[test]
    fn claims_must_be_an_object() {
        let jws = split("eyJhbGciOiJSUzI1NiJ9.WzFd.c2ln", 100).unwrap(); // [1]
        assert!(ClaimsView::parse(&claims_json(&jws).unwrap()).is_err());
        let jws = split("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", 100).unwrap(); // {}
        let json = claims_json(&jws).unwrap();
        assert!(ClaimsView::parse(&json).unwrap().raw("iss").is_none());
        for bad in [
            "",
            "{",
            "{}x",
            "{} {}",
            "{\"a\":}",
            "{\"a\":1,}",
            "null",
            "\"{}\"",
        ] {
            assert!(ClaimsView::parse(bad).is_err(), "{bad}");
        }
    }

    /// The view reads every claim as `serde_json`'s map of the same text
    /// does: escaped names, the last of a repeated name, nested values.
    #[test]
    fn the_view_reads_claims_as_a_json_map_does() {
        let json = r#"{"iss":"a","\u0069ss":"b","sub":"caf\u00e9","exp":1.7e9,"nbf":12,"aud":["x","y"],"cnf":{"jkt":"k"},"n":null,"s":"t"}"#;
        let map: Map<String, Value> = serde_json::from_str(json).unwrap();
        let view = ClaimsView::parse(json).unwrap();
        for name in [
            "iss", "sub", "exp", "nbf", "aud", "cnf", "n", "s", "missing",
        ] {
            assert_eq!(view.value(name), map.get(name).cloned(), "{name}");
            assert_eq!(
                view.present(name),
                map.get(name).is_some_and(|v| !v.is_null()),
                "{name}"
            );
        }
        assert_eq!(view.str("iss").unwrap().as_deref(), Some("b"));
        assert_eq!(view.str("sub").unwrap().as_deref(), Some("café"));
        assert!(view.str("exp").is_err());
        assert_eq!(view.str("missing").unwrap(), None);
        assert_eq!(view.numeric_date("exp").unwrap(), Some(1_700_000_000));
        assert_eq!(view.numeric_date("nbf").unwrap(), Some(12));
        let dates = ClaimsView::parse(
            r#"{"a":12.7,"b":1e3,"c":-0,"d":99999999999999999999,"e":-5,"f":"5","g":[5],"h":"\"x\"","i":"a\\b"}"#,
        )
        .unwrap();
        assert_eq!(dates.numeric_date("a").unwrap(), Some(12));
        assert_eq!(dates.numeric_date("b").unwrap(), Some(1000));
        assert_eq!(dates.numeric_date("c").unwrap(), Some(0));
        assert_eq!(dates.numeric_date("d").unwrap(), Some(i64::MAX));
        assert_eq!(dates.numeric_date("e").unwrap(), Some(-5));
        assert!(dates.numeric_date("f").is_err());
        assert!(dates.numeric_date("g").is_err());
        assert_eq!(dates.str("h").unwrap().as_deref(), Some("\"x\""));
        assert_eq!(dates.str("i").unwrap().as_deref(), Some("a\\b"));
        assert!(view.numeric_date("s").is_err());
        assert_eq!(view.json(), json);
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
