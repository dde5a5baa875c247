//! The pure validation core: a token string, an issuer's policy, its keys
//! and the request time in; a [`Verified`] token or a [`JwtError`] out. No
//! I/O and no clock, so every rule is unit-testable.
//!
//! The order follows RFC 8725: size cap, structure, issuer chosen by the
//! unverified `iss` (before any key is touched, so an unknown issuer costs
//! no network call), header rules (`crit`, `alg` allow-list, `typ`), key by
//! `kid` bound to its own `alg`, signature, and only then the claims.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use ztgate_filter::{TokenClaims, VerifiedToken};

use crate::config::{CertBinding, DpopMode};
use crate::keys::{KeySet, VerificationKey};
use crate::signature;
use crate::token::{self, ClaimsView, CompactJws, JoseHeader};
use crate::JwtError;

/// Everything the policy of one issuer needs; no I/O handles.
#[derive(Debug, Clone)]
pub struct IssuerPolicy {
    pub issuer: Arc<str>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// Accepted `typ` values; `None` accepts any (including none).
    pub typ: Option<Vec<String>>,
    pub leeway: Duration,
    pub max_lifetime: Option<Duration>,
    pub required_claims: Vec<String>,
    pub scope_claims: Vec<String>,
    pub forward_token: bool,
    pub cert_binding: CertBinding,
    pub dpop: DpopMode,
    pub dpop_window: Duration,
    /// `x-ztgate-issuer`, built once.
    pub issuer_header: HeaderValue,
    /// A digest of everything above. The verified-token cache outlives a
    /// reload; an entry verified under another policy (audiences,
    /// algorithms, `typ`…) is not served, it is verified again.
    pub tag: u64,
}

impl IssuerPolicy {
    /// The value of [`IssuerPolicy::tag`] (set by the build once every
    /// other field is known).
    pub(crate) fn digest(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(format!("{self:?}").as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(first)
    }
}

/// A token's segments, split and base64-decoded: the text that
/// [`Decoded::read`] parses, borrowing it.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    pub jws: CompactJws<'a>,
    header_json: String,
    claims_json: String,
}

impl Decoded<'_> {
    /// The header and the claims object (an error when either is not one).
    pub fn read(&self) -> Result<Unverified<'_>, JwtError> {
        Ok(Unverified {
            jws: self.jws,
            header: token::header(&self.header_json)?,
            claims: ClaimsView::parse(&self.claims_json)?,
        })
    }
}

/// A token whose structure parsed, nothing more.
#[derive(Debug)]
pub struct Unverified<'a> {
    pub jws: CompactJws<'a>,
    pub header: JoseHeader<'a>,
    pub claims: ClaimsView<'a>,
}

/// A token that passed every check of its issuer. Binding checks (RFC 8705,
/// RFC 9449) are per request and are not part of it.
#[derive(Debug, Clone)]
pub struct Verified {
    pub token: VerifiedToken,
    /// Index of the issuer in the filter's list.
    pub issuer_index: usize,
    /// `cnf.x5t#S256` (RFC 8705 §3.1).
    pub cnf_x5t: Option<String>,
    /// `cnf.jkt` (RFC 9449 §6.1).
    pub cnf_jkt: Option<String>,
    /// `x-ztgate-subject`, built once per verification.
    pub subject_header: Option<HeaderValue>,
    /// `x-ztgate-scopes`, built once per verification.
    pub scopes_header: HeaderValue,
    /// The issuer's key that signed it: a cached token is served only while
    /// its issuer still publishes this key.
    pub signed_by: Arc<VerificationKey>,
}

/// Size cap, segments, and the header's and claims' text (parsed by
/// [`Decoded::read`]).
pub fn decode(token: &str, max_size: usize) -> Result<Decoded<'_>, JwtError> {
    let jws = token::split(token, max_size)?;
    Ok(Decoded {
        jws,
        header_json: token::header_json(&jws)?,
        claims_json: token::claims_json(&jws)?,
    })
}

/// Pick the issuer by exact `iss` before any key is used.
pub fn select_issuer<'p>(
    claims: &ClaimsView<'_>,
    issuers: impl IntoIterator<Item = &'p IssuerPolicy>,
) -> Result<usize, JwtError> {
    let iss = claims
        .str("iss")
        .ok()
        .flatten()
        .ok_or(JwtError::IssuerUnknown)?;
    issuers
        .into_iter()
        .position(|p| *p.issuer == *iss)
        .ok_or(JwtError::IssuerUnknown)
}

/// Header rules of the issuer; returns the algorithm to verify with.
pub fn check_header(header: &JoseHeader<'_>, policy: &IssuerPolicy) -> Result<Algorithm, JwtError> {
    // RFC 7515 §4.1.11: an extension we do not implement must not be ignored.
    if header.crit.is_some() {
        return Err(JwtError::CritUnsupported);
    }
    // `none`, HMAC (key confusion) and anything off the allow-list stop here.
    let alg = header.algorithm()?;
    if !policy.algorithms.contains(&alg) {
        return Err(JwtError::AlgorithmNotAllowed);
    }
    // RFC 9068 §4: `at+jwt` keeps ID tokens from being replayed as access tokens.
    if let Some(allowed) = &policy.typ {
        if !allowed.iter().any(|t| header.typ_is(t)) {
            return Err(JwtError::TypeInvalid);
        }
    }
    Ok(alg)
}

/// The key(s) a token may be verified with. Never a key named by the token
/// itself (`jku`, `x5u`, `jwk`): only the issuer's configured set.
fn candidates<'k>(
    header: &JoseHeader<'_>,
    alg: Algorithm,
    keys: &'k KeySet,
) -> Result<Vec<&'k Arc<VerificationKey>>, JwtError> {
    match &header.kid {
        Some(kid) => {
            let key = keys.by_kid(kid).ok_or(JwtError::KeyUnknown)?;
            if !key.accepts(alg) {
                return Err(JwtError::AlgorithmNotAllowed);
            }
            Ok(vec![key])
        }
        None => {
            let found: Vec<_> = keys.all().iter().filter(|k| k.accepts(alg)).collect();
            if found.is_empty() {
                Err(JwtError::KeyUnknown)
            } else {
                Ok(found)
            }
        }
    }
}

/// Verify signature and claims against one issuer.
pub fn verify(
    u: &Unverified<'_>,
    alg: Algorithm,
    policy: &IssuerPolicy,
    issuer_index: usize,
    keys: &KeySet,
    now: SystemTime,
) -> Result<Verified, JwtError> {
    let signed_by = check(u, alg, policy, keys, now)?;
    finish(&u.claims, policy, issuer_index, signed_by)
}

/// [`verify`] without building the verified form: key, signature and
/// claims; returns the key that signed. The filter then hands the claims
/// to [`finish`].
pub fn check(
    u: &Unverified<'_>,
    alg: Algorithm,
    policy: &IssuerPolicy,
    keys: &KeySet,
    now: SystemTime,
) -> Result<Arc<VerificationKey>, JwtError> {
    let keys = candidates(&u.header, alg, keys)?;
    let signed_by = verify_signature(&u.jws, alg, &keys)?;
    check_claims(&u.claims, policy, now)?;
    Ok(signed_by.clone())
}

/// Which of `keys` signed `jws` with `alg`, if one did.
pub fn verify_signature<'k>(
    jws: &CompactJws<'_>,
    alg: Algorithm,
    keys: &[&'k Arc<VerificationKey>],
) -> Result<&'k Arc<VerificationKey>, JwtError> {
    if jws.signature.is_empty() {
        return Err(JwtError::SignatureInvalid);
    }
    // Malformed base64 is the caller's syntax error, not a bad signature.
    let sig = token::b64(jws.signature)?;
    let data = jws.signing_input.as_bytes();
    for key in keys {
        if signature::verify(alg, &key.key, data, &sig, jws.signature) {
            return Ok(key);
        }
    }
    Err(JwtError::SignatureInvalid)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Time, audience, lifetime and required-claim rules.
pub fn check_claims(
    claims: &ClaimsView<'_>,
    policy: &IssuerPolicy,
    now: SystemTime,
) -> Result<(), JwtError> {
    let now = secs(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    let leeway = secs(policy.leeway);
    let exp = claims
        .numeric_date("exp")?
        .ok_or_else(|| JwtError::ClaimMissing("exp".into()))?;
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.numeric_date("nbf")? {
        if nbf > now.saturating_add(leeway) {
            return Err(JwtError::NotYetValid);
        }
    }
    let iat = claims.numeric_date("iat")?;
    if let Some(iat) = iat {
        if iat > now.saturating_add(leeway) {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(max) = policy.max_lifetime {
        let iat = iat.ok_or_else(|| JwtError::ClaimMissing("iat".into()))?;
        if exp.saturating_sub(iat) > secs(max) {
            return Err(JwtError::LifetimeExceeded);
        }
    }
    if claims.str("iss").ok().flatten().as_deref() != Some(&*policy.issuer) {
        return Err(JwtError::IssuerUnknown);
    }
    // `aud` is a string or an array of strings (RFC 7519 §4.1.3); the
    // string, the usual case, is read without building a value.
    let aud_ok = match claims.str("aud") {
        Ok(Some(a)) => policy.audiences.iter().any(|w| *w == a),
        Ok(None) => false,
        Err(_) => match claims.value("aud") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| policy.audiences.iter().any(|w| w == a)),
            _ => false,
        },
    };
    if !aud_ok {
        return Err(JwtError::AudienceMismatch);
    }
    for name in &policy.required_claims {
        if !claims.present(name) {
            return Err(JwtError::ClaimMissing(name.clone()));
        }
    }
    Ok(())
}

/// Scopes from the first configured claim present: a space-separated
/// string or an array of strings; split, deduplicated, sorted.
pub fn scopes(claims: &ClaimsView<'_>, scope_claims: &[String]) -> Result<Vec<String>, JwtError> {
    let Some(name) = scope_claims.iter().find(|c| claims.raw(c).is_some()) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<String> = if let Ok(Some(s)) = claims.str(name) {
        // The usual shape, a space-separated string, without a value.
        s.split_whitespace().map(str::to_owned).collect()
    } else {
        match claims.value(name).unwrap_or(Value::Null) {
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let s = item
                        .as_str()
                        .ok_or(JwtError::Malformed("scope array holds a non-string"))?;
                    out.extend(s.split_whitespace().map(str::to_owned));
                }
                out
            }
            Value::Null => Vec::new(),
            _ => return Err(JwtError::Malformed("scope claim is not a string or array")),
        }
    };
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Build the verified form of claims [`check`] passed.
pub fn finish(
    claims: &ClaimsView<'_>,
    policy: &IssuerPolicy,
    issuer_index: usize,
    signed_by: Arc<VerificationKey>,
) -> Result<Verified, JwtError> {
    let subject = claims
        .str("sub")
        .map_err(|_| JwtError::Malformed("sub is not a string"))?
        .map(String::from);
    let scopes = scopes(claims, &policy.scope_claims)?;
    let (cnf_x5t, cnf_jkt) = match claims.value("cnf") {
        None => (None, None),
        Some(Value::Object(cnf)) => {
            let get = |k: &str| -> Result<Option<String>, JwtError> {
                match cnf.get(k) {
                    None => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(JwtError::Malformed("cnf member is not a string")),
                }
            };
            (get("x5t#S256")?, get("jkt")?)
        }
        Some(_) => return Err(JwtError::Malformed("cnf is not an object")),
    };
    let subject_header = subject
        .as_deref()
        .map(HeaderValue::from_str)
        .transpose()
        .map_err(|_| JwtError::Malformed("sub is not representable as a header"))?;
    let scopes_header = HeaderValue::from_str(&scopes.join(" "))
        .map_err(|_| JwtError::Malformed("scope is not representable as a header"))?;
    let exp = claims.numeric_date("exp")?.unwrap_or(0);
    let expires_at = UNIX_EPOCH + Duration::from_secs(u64::try_from(exp).unwrap_or(0));
    Ok(Verified {
        token: VerifiedToken::attested_by_jwt(
            policy.issuer.clone(),
            subject,
            scopes,
            expires_at,
            Arc::new(TokenClaims::new(claims.json())),
        ),
        issuer_index,
        cnf_x5t,
        cnf_jkt,
        subject_header,
        scopes_header,
        signed_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scopes_of(v: Value, claims: &[String]) -> Result<Vec<String>, JwtError> {
        let json = v.to_string();
        scopes(&ClaimsView::parse(&json).unwrap(), claims)
    }

    #[test]
    fn scopes_normalise_strings_and_arrays() {
        let claims = ["scope".to_owned(), "scp".to_owned()];
        assert_eq!(
            scopes_of(json!({"scope": "b a  b"}), &claims).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            scopes_of(json!({"scp": ["z", "a", "a"]}), &claims).unwrap(),
            vec!["a", "z"]
        );
        assert_eq!(
            scopes_of(json!({"scp": ["b c", "a"]}), &claims).unwrap(),
            vec!["a", "b", "c"]
        );
        assert!(scopes_of(json!({"scp": [1]}), &claims).is_err());
        assert!(scopes_of(json!({"scp": 1}), &claims).is_err());
        assert!(scopes_of(json!({"scope": null, "scp": "a"}), &claims)
            .unwrap()
            .is_empty());
        assert!(scopes_of(json!({}), &claims).unwrap().is_empty());
    }
}
