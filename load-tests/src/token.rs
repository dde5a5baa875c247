//! Bearer tokens for the load: read from a file, or minted here with the
//! issuer's private key so that every call can carry a token the gateway
//! has never seen (the cache-miss workload).
//!
//! Minting is done with `ring` directly: a JWT is three base64url parts and
//! one signature, and RS256 signing is ~1 ms of CPU, so tokens are minted
//! into a pool *before* the run (spread over all cores) and handed out in
//! order; the run reports how often the pool wrapped around.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use http::HeaderValue;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};

use crate::dpop::DpopAuth;

/// Errors while loading keys or minting.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM private key found")]
    NoKey { path: String },
    #[error("{path}: the key is not a valid {alg} private key ({why})")]
    BadKey {
        path: String,
        alg: &'static str,
        why: String,
    },
    #[error("{path}: the token file is empty")]
    EmptyTokenFile { path: String },
    #[error("the token is not a valid header value")]
    BadHeader,
    #[error("signing failed")]
    Sign,
}

/// JWS algorithm of minted tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Alg {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// An issuer's signing key plus the claims every minted token carries.
pub struct Minter {
    key: Key,
    alg: Alg,
    kid: String,
    iss: String,
    aud: String,
    sub: String,
    scope: String,
    lifetime_s: u64,
    cnf_jkt: Option<String>,
    rng: SystemRandom,
    serial: AtomicU64,
    /// Makes `jti` unique across processes started in the same second.
    run_id: u64,
}

/// What goes into minted tokens.
#[derive(Clone, Debug)]
pub struct Claims {
    pub kid: String,
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub scope: String,
    pub lifetime_s: u64,
    /// RFC 9449 `cnf.jkt`: bind the token to this DPoP key thumbprint.
    pub cnf_jkt: Option<String>,
}

pub(crate) fn read_pem_key(path: &Path) -> Result<Vec<u8>, TokenError> {
    let shown = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| TokenError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut rd = std::io::BufReader::new(data.as_slice());
    match rustls_pemfile::private_key(&mut rd) {
        Ok(Some(k)) => Ok(k.secret_der().to_vec()),
        _ => Err(TokenError::NoKey { path: shown }),
    }
}

impl Minter {
    /// Load the PEM private key at `path` (PKCS#8, or PKCS#1 for RSA).
    pub fn load(path: &Path, alg: Alg, claims: Claims) -> Result<Self, TokenError> {
        let der = read_pem_key(path)?;
        let rng = SystemRandom::new();
        let bad = |why: String| TokenError::BadKey {
            path: path.display().to_string(),
            alg: alg.as_str(),
            why,
        };
        let key = match alg {
            Alg::Rs256 => Key::Rsa(
                RsaKeyPair::from_pkcs8(&der)
                    .or_else(|_| RsaKeyPair::from_der(&der))
                    .map_err(|e| bad(e.to_string()))?,
            ),
            Alg::Es256 => Key::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
                    .map_err(|e| bad(e.to_string()))?,
            ),
        };
        let run_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(Self {
            key,
            alg,
            kid: claims.kid,
            iss: claims.iss,
            aud: claims.aud,
            sub: claims.sub,
            scope: claims.scope,
            lifetime_s: claims.lifetime_s,
            cnf_jkt: claims.cnf_jkt,
            rng,
            serial: AtomicU64::new(0),
            run_id,
        })
    }

    /// A fresh signed token (unique `jti`).
    pub fn mint(&self) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let header = serde_json::json!({"alg": self.alg.as_str(), "typ": "JWT", "kid": self.kid});
        let mut payload = serde_json::json!({
            "iss": self.iss,
            "sub": self.sub,
            "aud": self.aud,
            "scope": self.scope,
            "iat": now,
            "nbf": now.saturating_sub(5),
            "exp": now + self.lifetime_s,
            "jti": format!("{:x}-{serial}", self.run_id),
        });
        if let Some(jkt) = &self.cnf_jkt {
            payload["cnf"] = serde_json::json!({ "jkt": jkt });
        }
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(payload.to_string())
        );
        let sig = match &self.key {
            Key::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    signing_input.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| TokenError::Sign)?;
                sig
            }
            Key::Ec(k) => k
                .sign(&self.rng, signing_input.as_bytes())
                .map_err(|_| TokenError::Sign)?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }

    /// The public half as a JWKS document (`{"keys":[…]}`).
    pub fn jwks(&self) -> serde_json::Value {
        let jwk = match &self.key {
            Key::Rsa(k) => {
                let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
                serde_json::json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                    "n": B64.encode(&c.n), "e": B64.encode(&c.e),
                })
            }
            Key::Ec(k) => {
                // Uncompressed point: 0x04 || x (32) || y (32).
                let p = k.public_key().as_ref();
                let (x, y) = match p.get(1..33).zip(p.get(33..65)) {
                    Some(xy) => xy,
                    None => (&[][..], &[][..]),
                };
                serde_json::json!({
                    "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": self.kid,
                    "x": B64.encode(x), "y": B64.encode(y),
                })
            }
        };
        serde_json::json!({ "keys": [jwk] })
    }
}

/// Where each call's `authorization` header comes from.
#[derive(Clone, Default)]
pub enum TokenSource {
    /// No header (mTLS-only targets).
    #[default]
    None,
    /// The same token on every call (cache hits after the first).
    Static(HeaderValue),
    /// A different token on every call, taken in order from a pre-minted pool.
    Pool(Arc<Pool>),
    /// One DPoP-bound token (`authorization: DPoP …`) with a fresh proof
    /// signed for every call.
    Dpop(Arc<DpopAuth>),
}

/// Pre-minted `Bearer …` header values.
pub struct Pool {
    values: Vec<HeaderValue>,
    next: AtomicUsize,
}

impl Pool {
    /// Mint `count` tokens using `threads` OS threads.
    pub fn mint(minter: &Minter, count: usize, threads: usize) -> Result<Self, TokenError> {
        let threads = threads.clamp(1, 64);
        let per = count.div_ceil(threads);
        let parts: Vec<Result<Vec<HeaderValue>, TokenError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let n = per.min(count.saturating_sub(t * per));
                    s.spawn(move || {
                        (0..n)
                            .map(|_| bearer(&minter.mint()?))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(TokenError::Sign)))
                .collect()
        });
        let mut values = Vec::with_capacity(count);
        for p in parts {
            values.extend(p?);
        }
        Ok(Self {
            values,
            next: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The next token, wrapping around at the end of the pool.
    pub fn take(&self) -> Option<&HeaderValue> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.values.get(i.checked_rem(self.values.len())?)
    }

    /// How many tokens were handed out in total.
    pub fn taken(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }
}

impl TokenSource {
    /// A static token from the first non-empty line of `path`.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        Ok(Self::Static(bearer(&Self::read_token(path)?)?))
    }

    pub fn header(&self) -> Option<&HeaderValue> {
        match self {
            TokenSource::None => None,
            TokenSource::Static(h) => Some(h),
            TokenSource::Pool(p) => p.take(),
            TokenSource::Dpop(d) => Some(d.authorization()),
        }
    }

    /// The `dpop` header for one call to `htu_json` (the request's
    /// `https://authority/path` as a JSON string literal); `None` unless
    /// the source is DPoP.
    pub fn proof(&self, htu_json: &str) -> Result<Option<HeaderValue>, TokenError> {
        match self {
            TokenSource::Dpop(d) => d.proof_header(htu_json).map(Some),
            _ => Ok(None),
        }
    }

    /// The first non-empty line of `path`, trimmed.
    pub fn read_token(path: &Path) -> Result<String, TokenError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
            .ok_or(TokenError::EmptyTokenFile { path: shown })
    }
}

/// `Bearer <token>` as a sensitive header value (kept out of h2's HPACK
/// table, as a real client would).
pub fn bearer(token: &str) -> Result<HeaderValue, TokenError> {
    let mut v =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| TokenError::BadHeader)?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            kid: "k1".into(),
            iss: "https://idp.test".into(),
            aud: "orders".into(),
            sub: "alice".into(),
            scope: "orders.read".into(),
            lifetime_s: 600,
            cnf_jkt: None,
        }
    }

    fn ec_key_file(dir: &Path) -> std::path::PathBuf {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        let p = dir.join("ec.pem");
        std::fs::write(&p, pem).unwrap();
        p
    }

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ztgate-lt-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn es256_tokens_verify_with_the_exported_jwk_and_are_unique() {
        let dir = tmpdir("es");
        let m = Minter::load(&ec_key_file(&dir), Alg::Es256, claims()).unwrap();
        let t1 = m.mint().unwrap();
        let t2 = m.mint().unwrap();
        assert_ne!(t1, t2, "jti must differ");
        let jwks = m.jwks();
        let k = &jwks["keys"][0];
        let mut point = vec![4u8];
        point.extend(B64.decode(k["x"].as_str().unwrap()).unwrap());
        point.extend(B64.decode(k["y"].as_str().unwrap()).unwrap());
        let (input, sig) = t1.rsplit_once('.').unwrap();
        let pk = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point);
        pk.verify(input.as_bytes(), &B64.decode(sig).unwrap())
            .unwrap();
        let payload: serde_json::Value =
            serde_json::from_slice(&B64.decode(input.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(payload["iss"], "https://idp.test");
        assert_eq!(payload["scope"], "orders.read");
        assert!(payload["exp"].as_u64().unwrap() > payload["iat"].as_u64().unwrap());
    }

    #[test]
    fn cnf_jkt_is_minted_when_asked() {
        let dir = tmpdir("cnf");
        let mut c = claims();
        c.cnf_jkt = Some("thumb".into());
        let t = Minter::load(&ec_key_file(&dir), Alg::Es256, c)
            .unwrap()
            .mint()
            .unwrap();
        let payload: serde_json::Value =
            serde_json::from_slice(&B64.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(payload["cnf"]["jkt"], "thumb");
        let t = Minter::load(&ec_key_file(&dir), Alg::Es256, claims())
            .unwrap()
            .mint()
            .unwrap();
        let payload: serde_json::Value =
            serde_json::from_slice(&B64.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert!(payload.get("cnf").is_none());
    }

    #[test]
    fn pool_hands_out_every_token_then_wraps() {
        let dir = tmpdir("pool");
        let m = Minter::load(&ec_key_file(&dir), Alg::Es256, claims()).unwrap();
        let pool = Pool::mint(&m, 5, 2).unwrap();
        assert_eq!(pool.len(), 5);
        let first: Vec<_> = (0..5).map(|_| pool.take().unwrap().clone()).collect();
        let distinct: std::collections::HashSet<_> = first.iter().map(|h| h.as_bytes()).collect();
        assert_eq!(distinct.len(), 5);
        assert_eq!(pool.take().unwrap(), &first[0]);
        assert_eq!(pool.taken(), 6);
    }

    #[test]
    fn wrong_key_type_is_refused_without_panicking() {
        let dir = tmpdir("wrong");
        let err = Minter::load(&ec_key_file(&dir), Alg::Rs256, claims())
            .err()
            .unwrap();
        assert!(matches!(err, TokenError::BadKey { .. }), "{err}");
    }

    #[test]
    fn token_file_takes_the_first_line() {
        let dir = tmpdir("file");
        let p = dir.join("t.txt");
        std::fs::write(&p, "\n  abc.def.ghi  \nother\n").unwrap();
        let TokenSource::Static(h) = TokenSource::from_file(&p).unwrap() else {
            panic!("static expected")
        };
        assert_eq!(h.to_str().unwrap(), "Bearer abc.def.ghi");
        assert!(h.is_sensitive());
    }
}
