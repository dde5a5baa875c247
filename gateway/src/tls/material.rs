//! Loading and checking PEM material: certificate chains, private keys, CA
//! bundles. Used by `check`, by the listener at start, and on every reload,
//! so all three agree on what a valid file is.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::{X509Ref, X509};

/// A problem with one file, for the config key that named it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaterialError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{path}: not a valid PEM certificate ({reason})")]
    BadCertificate { path: String, reason: String },
    #[error("{path}: not a valid PEM private key")]
    BadKey { path: String },
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch { cert: String, key: String },
    #[error("{path}: certificate expired")]
    Expired { path: String },
}

pub(super) fn read(path: &Path) -> Result<Vec<u8>, MaterialError> {
    std::fs::read(path).map_err(|e| MaterialError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Every certificate in a PEM file, in order (leaf first for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<X509>, MaterialError> {
    let pem = read(path)?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| MaterialError::BadCertificate {
        path: path.display().to_string(),
        reason: e
            .errors()
            .first()
            .and_then(|e| e.reason().map(str::to_owned))
            .unwrap_or_else(|| "parse error".into()),
    })?;
    if certs.is_empty() {
        return Err(MaterialError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PKey<Private>, MaterialError> {
    let pem = read(path)?;
    // Never echo the key file's content or OpenSSL's parse detail.
    PKey::private_key_from_pem(&pem).map_err(|_| MaterialError::BadKey {
        path: path.display().to_string(),
    })
}

/// A certificate chain and its key, checked to belong together.
#[derive(Clone)]
pub struct CertAndKey {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

/// Which config key a material problem belongs to, so it is reported at
/// the key that named the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
    Trust(super::trust::TrustSource),
    /// `listener.tls.crl[i]`.
    Crl(usize),
}

impl Part {
    /// The key's last part, for a cert/key pair named under another section
    /// (an upstream's `tls.cert`/`tls.key`).
    pub fn key_name(&self) -> String {
        match self.key_path().rsplit_once("listener.tls.") {
            Some((_, name)) => name.to_owned(),
            None => self.key_path(),
        }
    }

    /// The config key path: `listener.tls.cert`, `mtls.trust_bundles.TD`, …
    pub fn key_path(&self) -> String {
        use super::trust::TrustSource;
        match self {
            Part::Cert => "listener.tls.cert".into(),
            Part::Key => "listener.tls.key".into(),
            Part::Trust(TrustSource::ClientCa) => "listener.tls.client_ca".into(),
            Part::Trust(TrustSource::Bundle(td)) => format!("mtls.trust_bundles.{td}"),
            Part::Crl(i) => format!("listener.tls.crl[{i}]"),
        }
    }
}

impl CertAndKey {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, Vec<(Part, MaterialError)>> {
        let chain = load_certs(cert).map_err(|e| (Part::Cert, e));
        let pkey = load_key(key).map_err(|e| (Part::Key, e));
        match (chain, pkey) {
            (Ok(chain), Ok(pkey)) => {
                let matches = chain
                    .first()
                    .and_then(|leaf| leaf.public_key().ok())
                    .is_some_and(|pk| pk.public_eq(&pkey));
                if !matches {
                    return Err(vec![(
                        Part::Key,
                        MaterialError::KeyMismatch {
                            cert: cert.display().to_string(),
                            key: key.display().to_string(),
                        },
                    )]);
                }
                Ok(Self { chain, key: pkey })
            }
            (a, b) => Err([a.err(), b.err()].into_iter().flatten().collect()),
        }
    }

    /// `notAfter` of the leaf.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.chain.first().and_then(not_after)
    }
}

/// A trust bundle: its anchors (the verify store is built over every
/// bundle at once, see `super::trust::ClientTrust`).
#[derive(Clone)]
pub struct TrustBundle {
    pub certs: Vec<X509>,
    /// What this bundle trusts, as a digest: see [`trust_digest`].
    pub digest: TrustDigest,
}

/// SHA-256 naming a set of trust anchors; equal digests trust the same
/// certificates.
pub type TrustDigest = [u8; 32];

/// The digest of a trust bundle: SHA-256 over a version label, then each
/// certificate's DER, length-prefixed, in file order.
///
/// It is the identity a TLS session is bound to (see
/// [`super::ServerMaterial::trust_id`]), so it covers exactly what decides
/// whether a client certificate verifies: the anchors' DER, not the PEM
/// text (comments, line endings and re-encoding of the same bundle do not
/// change it). A reordered bundle gets another digest; that only costs the
/// sessions issued before it a full handshake.
pub fn trust_digest(certs: &[X509]) -> Result<TrustDigest, openssl::error::ErrorStack> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"ztgate client trust v1\0");
    for c in certs {
        let der = c.to_der()?;
        h.update((der.len() as u64).to_be_bytes());
        h.update(&der);
    }
    Ok(h.finalize().into())
}

impl TrustBundle {
    pub fn load(path: &Path) -> Result<Self, MaterialError> {
        Self::from_certs(path, load_certs(path)?)
    }

    /// A bundle of `certs`, read from `path` (named in errors).
    pub fn from_certs(path: &Path, certs: Vec<X509>) -> Result<Self, MaterialError> {
        let bad = |reason: String| MaterialError::BadCertificate {
            path: path.display().to_string(),
            reason,
        };
        let digest = trust_digest(&certs).map_err(|e| bad(e.to_string()))?;
        Ok(Self { certs, digest })
    }
}

/// `notAfter` of a certificate as a `SystemTime`.
pub fn not_after(cert: &X509) -> Option<SystemTime> {
    system_time(cert.not_after())
}

/// An ASN.1 time (certificate validity, CRL updates) as a `SystemTime`;
/// `None` before the epoch.
pub fn system_time(t: &openssl::asn1::Asn1TimeRef) -> Option<SystemTime> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(t).ok()?;
    let secs = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// A human name for a certificate (its subject CN or the whole subject).
pub fn display_name(cert: &X509Ref) -> String {
    cert.subject_name()
        .entries_by_nid(pingora::tls::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_else(|| "unnamed".into())
}
