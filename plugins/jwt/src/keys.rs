//! JSON Web Keys (RFC 7517) reduced to what verification needs: an OpenSSL
//! public key, built once per JWKS key (not per token), bound to the
//! algorithms it may verify, and the RFC 7638 thumbprint used by DPoP.
//!
//! Each key is bound to its own `alg` (or, without one, to its key type and
//! curve) so that a token can never pick an algorithm its key was not made
//! for (RFC 8725 §3.1). Keys for encryption, of unknown type, or carrying
//! private parameters are ignored rather than trusted.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::token::parse_asymmetric_alg;

/// What a key is, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn accepts(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// A public key ready to verify signatures.
#[derive(Clone)]
pub struct VerificationKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's own `alg`, when it named one.
    pub alg: Option<Algorithm>,
    /// Built once, when the JWKS is fetched (see [`crate::signature`]).
    pub key: KeyMaterial,
    /// RFC 7638 thumbprint: which key this is, whatever JWKS it came in.
    pub thumbprint: String,
}

/// What verifies a key's signatures, whichever is faster for its type
/// (measured side by side: `examples/signature_speed.rs`).
#[derive(Clone)]
pub enum KeyMaterial {
    /// RSA: OpenSSL with the key parsed once (ring rebuilds an RSA public
    /// key on every verify: RS256 331k vs 399k instructions). The `Rsa`
    /// is the same key for the PKCS#1 v1.5 path, which skips the EVP
    /// set-up ([`crate::signature`]).
    OpenSsl(PKey<Public>, Rsa<Public>),
    /// EC and Ed25519: ring through `jsonwebtoken` (ES256 746k vs
    /// OpenSSL's 879k instructions; the point is validated at parse).
    Ring(DecodingKey),
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.accepts(alg) && self.alg.is_none_or(|own| own == alg)
    }
}

/// Why one JWK was not turned into a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("key is for encryption (`use: enc`)")]
    EncryptionKey,
    #[error("unsupported key type or curve")]
    Unsupported,
    #[error("key `alg` is not an asymmetric signature algorithm")]
    UnsupportedAlg,
    #[error("key `alg` does not fit its key type")]
    AlgKindMismatch,
    #[error("key carries private parameters")]
    PrivateParts,
    #[error("key parameter `{0}` missing or invalid")]
    Param(&'static str),
}

/// Members that only a private (or symmetric) JWK has.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

fn str_member<'a>(jwk: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, JwkError> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or(JwkError::Param(name))
}

/// A base64url member that decodes to exactly `len` bytes (curve coordinates).
fn coord(jwk: &Map<String, Value>, name: &'static str, len: usize) -> Result<Vec<u8>, JwkError> {
    let s = str_member(jwk, name)?;
    match URL_SAFE_NO_PAD.decode(s) {
        Ok(b) if b.len() == len => Ok(b),
        _ => Err(JwkError::Param(name)),
    }
}

/// A base64url big-endian unsigned integer (RSA `n`, `e`).
fn uint(jwk: &Map<String, Value>, name: &'static str) -> Result<BigNum, JwkError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(str_member(jwk, name)?)
        .map_err(|_| JwkError::Param(name))?;
    if bytes.is_empty() {
        return Err(JwkError::Param(name));
    }
    BigNum::from_slice(&bytes).map_err(|_| JwkError::Param(name))
}

/// Smallest RSA modulus accepted: 2048 bits (RFC 7518 §3.3 requires it
/// for RS*, and shorter keys are factorable).
const MIN_RSA_BITS: i32 = 2048;
/// Largest: a 16384-bit modulus already costs milliseconds per verify; a
/// hostile JWKS must not make every verification a denial of service.
const MAX_RSA_BITS: i32 = 16384;

fn rsa_key(jwk: &Map<String, Value>) -> Result<KeyMaterial, JwkError> {
    let n = uint(jwk, "n")?;
    let e = uint(jwk, "e")?;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&n.num_bits()) {
        return Err(JwkError::Param("n"));
    }
    let rsa = Rsa::from_public_components(n, e).map_err(|_| JwkError::Param("n"))?;
    let pkey = PKey::from_rsa(rsa.clone()).map_err(|_| JwkError::Param("n"))?;
    Ok(KeyMaterial::OpenSsl(pkey, rsa))
}

fn ec_key(jwk: &Map<String, Value>, curve: Nid, len: usize) -> Result<DecodingKey, JwkError> {
    let (xb, yb) = (coord(jwk, "x", len)?, coord(jwk, "y", len)?);
    let x = BigNum::from_slice(&xb).map_err(|_| JwkError::Param("x"))?;
    let y = BigNum::from_slice(&yb).map_err(|_| JwkError::Param("y"))?;
    let group = EcGroup::from_curve_name(curve).map_err(|_| JwkError::Unsupported)?;
    // Refuses a point that is not on the curve (invalid-curve attacks).
    let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y)
        .map_err(|_| JwkError::Param("x"))?;
    ec.check_key().map_err(|_| JwkError::Param("x"))?;
    DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(&xb), &URL_SAFE_NO_PAD.encode(&yb))
        .map_err(|_| JwkError::Param("x"))
}

/// Turn one public JWK into a verification key.
pub fn parse_jwk(jwk: &Map<String, Value>) -> Result<VerificationKey, JwkError> {
    if jwk.get("use").and_then(Value::as_str) == Some("enc") {
        return Err(JwkError::EncryptionKey);
    }
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(JwkError::PrivateParts);
    }
    let kty = str_member(jwk, "kty")?;
    let (kind, key) = match kty {
        "RSA" => (KeyKind::Rsa, rsa_key(jwk)?),
        "EC" => match str_member(jwk, "crv")? {
            "P-256" => (
                KeyKind::P256,
                KeyMaterial::Ring(ec_key(jwk, Nid::X9_62_PRIME256V1, 32)?),
            ),
            "P-384" => (
                KeyKind::P384,
                KeyMaterial::Ring(ec_key(jwk, Nid::SECP384R1, 48)?),
            ),
            _ => return Err(JwkError::Unsupported),
        },
        "OKP" => {
            if str_member(jwk, "crv")? != "Ed25519" {
                return Err(JwkError::Unsupported);
            }
            let x = coord(jwk, "x", 32)?;
            // A valid Ed25519 point (OpenSSL checks the encoding).
            PKey::public_key_from_raw_bytes(&x, Id::ED25519).map_err(|_| JwkError::Param("x"))?;
            let key = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(&x))
                .map_err(|_| JwkError::Param("x"))?;
            (KeyKind::Ed25519, KeyMaterial::Ring(key))
        }
        _ => return Err(JwkError::Unsupported),
    };
    let alg = match jwk.get("alg") {
        None => None,
        Some(v) => {
            let a = v
                .as_str()
                .and_then(parse_asymmetric_alg)
                .ok_or(JwkError::UnsupportedAlg)?;
            if !kind.accepts(a) {
                return Err(JwkError::AlgKindMismatch);
            }
            Some(a)
        }
    };
    Ok(VerificationKey {
        kid: jwk.get("kid").and_then(Value::as_str).map(str::to_owned),
        kind,
        alg,
        key,
        thumbprint: thumbprint(jwk)?,
    })
}

/// RFC 7638 JWK thumbprint: base64url(SHA-256) of the required members in
/// lexicographic order, no whitespace.
pub fn thumbprint(jwk: &Map<String, Value>) -> Result<String, JwkError> {
    let kty = str_member(jwk, "kty")?;
    let members: &[&'static str] = match kty {
        "RSA" => &["e", "kty", "n"],
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        _ => return Err(JwkError::Unsupported),
    };
    let mut canon = String::from("{");
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            canon.push(',');
        }
        let v = str_member(jwk, m)?;
        // serde_json quoting is RFC 8259 string encoding, as RFC 7638 §3.3 asks.
        canon.push_str(&Value::from(*m).to_string());
        canon.push(':');
        canon.push_str(&Value::from(v).to_string());
    }
    canon.push('}');
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canon.as_bytes())))
}

/// Why a JWKS document gave no keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS is not a JSON object with a `keys` array")]
    Shape,
    #[error("JWKS has no usable signature key ({ignored} ignored)")]
    NoUsableKeys { ignored: usize },
}

/// The usable keys of one issuer, indexed by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerificationKey>>,
    /// Keys without a `kid`, tried in order for tokens without one.
    all: Vec<Arc<VerificationKey>>,
    /// Keys skipped (unknown kty, `use: enc`, bad parameters).
    pub ignored: usize,
}

impl KeySet {
    /// Parse a JWKS document (RFC 7517 §5), skipping keys we must not use.
    pub fn from_jwks(bytes: &[u8]) -> Result<Self, JwksError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::Shape)?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::Shape)?;
        let mut set = KeySet::default();
        for k in keys {
            match k.as_object().map(parse_jwk) {
                Some(Ok(key)) => set.insert(key),
                _ => set.ignored += 1,
            }
        }
        if set.all.is_empty() {
            return Err(JwksError::NoUsableKeys {
                ignored: set.ignored,
            });
        }
        Ok(set)
    }

    fn insert(&mut self, key: VerificationKey) {
        let key = Arc::new(key);
        if let Some(kid) = &key.kid {
            // A duplicate kid keeps the first key, as most IdPs list the
            // current key first; ambiguity is never resolved by the token.
            self.by_kid
                .entry(kid.clone())
                .or_insert_with(|| key.clone());
        }
        self.all.push(key);
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn by_kid(&self, kid: &str) -> Option<&Arc<VerificationKey>> {
        self.by_kid.get(kid)
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Whether `key` (by its thumbprint, under the `kid` it was found by)
    /// is still one of these keys.
    pub fn publishes(&self, key: &VerificationKey) -> bool {
        match &key.kid {
            Some(kid) => self
                .by_kid(kid)
                .is_some_and(|k| k.thumbprint == key.thumbprint),
            None => self.all.iter().any(|k| k.thumbprint == key.thumbprint),
        }
    }

    /// Every key, for tokens without a `kid`.
    pub fn all(&self) -> &[Arc<VerificationKey>] {
        &self.all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = obj(json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }));
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn unusable_keys_are_ignored_not_fatal() {
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-256", "use": "enc", "kid": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "XYZ"}, 7
        ]});
        let set = KeySet::from_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.ignored, 4);
        assert!(set.contains_kid("sig"));
        assert!(!set.contains_kid("hmac"));
    }

    #[test]
    fn key_is_bound_to_its_alg() {
        let k = parse_jwk(&obj(json!({"kty": "EC", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})))
        .unwrap();
        assert!(k.accepts(Algorithm::ES256));
        assert!(!k.accepts(Algorithm::ES384));
        assert!(!k.accepts(Algorithm::RS256));
        let bad = parse_jwk(&obj(json!({"kty": "EC", "crv": "P-256", "alg": "RS256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})));
        assert_eq!(bad.unwrap_err(), JwkError::AlgKindMismatch);
    }

    #[test]
    fn private_and_empty_sets_are_refused() {
        let doc = json!({"keys": [{"kty": "EC", "crv": "P-256", "d": "x",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]});
        assert_eq!(
            KeySet::from_jwks(doc.to_string().as_bytes()).unwrap_err(),
            JwksError::NoUsableKeys { ignored: 1 }
        );
        assert_eq!(KeySet::from_jwks(b"[]").unwrap_err(), JwksError::Shape);
    }
}
