//! Certificate revocation lists for client certificates
//! (`listener.tls.crl`).
//!
//! Each CRL is issued by one of the trust anchors (`client_ca` or a trust
//! bundle), or by an intermediate CA named beside it (`{ file, issuer }`:
//! the intermediate's certificate, which must chain to an anchor — clients
//! send it, but a CRL must be verifiable at load). Each is verified against
//! its issuer once, when loaded, so a handshake costs only a lookup by
//! serial per certificate of the chain (OpenSSL keeps a CRL's entries
//! sorted): every certificate below the anchor is looked up in the CRL of
//! its issuer, so a leaf is revoked by its intermediate's CRL and the
//! intermediate by the root's.
//!
//! A CRL past its nextUpdate is refused by `check` and by a reload (which
//! keeps the old material); one that expires while in use goes on being
//! applied (its revocations still hold) and shows in
//! `ztgate_crl_next_update_timestamp_seconds`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use openssl::stack::Stack;
use pingora::tls::x509::{CrlStatus, X509Crl, X509Ref, X509StoreContext, X509};
use sha2::{Digest, Sha256};

use super::material::{display_name, read, system_time, MaterialError, TrustDigest};
use super::trust::ClientTrust;

/// One configured CRL: its file, and the certificate of its issuer when
/// that is an intermediate CA rather than a trust anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSource {
    pub path: PathBuf,
    pub issuer: Option<PathBuf>,
}

impl CrlSource {
    /// A CRL issued by a trust anchor.
    pub fn file(path: PathBuf) -> Self {
        Self { path, issuer: None }
    }

    /// The files to watch: the CRL and its issuer's certificate.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.path).chain(self.issuer.iter())
    }
}

/// One loaded, verified CRL.
pub struct Crl {
    crl: X509Crl,
    /// DER of the intermediate CA certificate it was verified against
    /// (`None`: an anchor).
    issuer_der: Option<Vec<u8>>,
    /// DER of the issuer's name, the key a certificate is looked up by.
    issuer: Vec<u8>,
    /// A name for metrics and logs: the issuing CA's CN.
    pub issuer_name: String,
    pub next_update: Option<SystemTime>,
    pub path: PathBuf,
}

/// Every configured CRL.
#[derive(Default)]
pub struct Crls {
    pub lists: Vec<Crl>,
    /// Over every CRL's DER, in order: part of the session id context, so a
    /// new CRL ends resumption of sessions verified before it.
    pub digest: TrustDigest,
}

impl Crls {
    /// Load and verify `paths` (PEM or DER, one CRL each) against the
    /// anchors of `trust`; every problem is reported with the index of the
    /// file that has it.
    pub fn load(
        paths: &[CrlSource],
        trust: &ClientTrust,
    ) -> Result<Self, Vec<(usize, MaterialError)>> {
        Self::load_with(paths, trust, false)
    }

    /// [`Self::load`]; with `defer_unknown_issuers`, a CRL whose issuer is
    /// not (yet) an anchor is left out with a warning instead of refused:
    /// its CA may be one the SPIFFE Workload API has not delivered yet.
    /// Safe to leave out: a CRL is only ever from an anchor, and no client
    /// chain verifies to an anchor that is not there.
    pub fn load_with(
        paths: &[CrlSource],
        trust: &ClientTrust,
        defer_unknown_issuers: bool,
    ) -> Result<Self, Vec<(usize, MaterialError)>> {
        let mut lists = Vec::new();
        let mut problems = Vec::new();
        let mut h = Sha256::new();
        h.update(b"ztgate crls v1\0");
        for (i, src) in paths.iter().enumerate() {
            let path = &src.path;
            match load_one(src, trust) {
                Ok(Some((crl, der))) => {
                    // The issuer's certificate too (for an intermediate):
                    // a new one ends resumption like a new CRL does.
                    for part in std::iter::once(der.as_slice()).chain(crl.issuer_der.as_deref()) {
                        h.update((part.len() as u64).to_be_bytes());
                        h.update(part);
                    }
                    lists.push(crl);
                }
                Ok(None) if defer_unknown_issuers => tracing::warn!(
                    crl = %path.display(),
                    "CRL not applied: its issuer is not among the trust anchors (yet)"
                ),
                Ok(None) => problems.push((
                    i,
                    MaterialError::BadCertificate {
                        path: path.display().to_string(),
                        reason: match &src.issuer {
                            None => UNKNOWN_ISSUER.into(),
                            Some(ca) => format!(
                                "its issuer {} does not chain to a CA of listener.tls.client_ca or mtls.trust_bundles",
                                ca.display()
                            ),
                        },
                    },
                )),
                Err(e) => problems.push((i, e)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            lists,
            digest: h.finalize().into(),
        })
    }

    /// The CRL that lists `cert` as revoked, if any: one issued under the
    /// name of `cert`'s issuer.
    pub fn revoking(&self, cert: &X509Ref) -> Option<&Crl> {
        let issuer = cert.issuer_name().to_der().ok()?;
        self.lists.iter().find(|c| {
            c.issuer == issuer
                && matches!(
                    c.crl.get_by_serial(cert.serial_number()),
                    CrlStatus::Revoked(_)
                )
        })
    }

    /// The first certificate of `chain` (leaf first, anchor last; the
    /// anchor itself is not checked) that a CRL revokes, as its CN.
    pub fn revoked_in<'a>(&self, chain: impl IntoIterator<Item = &'a X509Ref>) -> Option<String> {
        if self.lists.is_empty() {
            return None;
        }
        let chain: Vec<&X509Ref> = chain.into_iter().collect();
        let below_anchor = chain.len().saturating_sub(1).max(1);
        chain
            .into_iter()
            .take(below_anchor)
            .find(|c| self.revoking(c).is_some())
            .map(display_name)
    }
}

const UNKNOWN_ISSUER: &str =
    "its issuer is not a CA of listener.tls.client_ca or mtls.trust_bundles";

/// One CRL, verified; `None` when its issuer is not an anchor.
fn load_one(src: &CrlSource, trust: &ClientTrust) -> Result<Option<(Crl, Vec<u8>)>, MaterialError> {
    let path = src.path.as_path();
    let bytes = read(path)?;
    let bad = |reason: String| MaterialError::BadCertificate {
        path: path.display().to_string(),
        reason,
    };
    let crl = X509Crl::from_pem(&bytes)
        .or_else(|_| X509Crl::from_der(&bytes))
        .map_err(|_| bad("not a PEM or DER certificate revocation list".into()))?;
    let issuer = crl.issuer_name().to_der().map_err(|e| bad(e.to_string()))?;
    let (signer, issuer_der) = match &src.issuer {
        None => {
            let Some(anchor) = trust
                .anchors()
                .map(|(_, c)| c)
                .find(|c| c.subject_name().to_der().ok().as_deref() == Some(issuer.as_slice()))
            else {
                return Ok(None);
            };
            (anchor.to_owned(), None)
        }
        Some(ca_path) => {
            // Not chaining (yet) is like an unknown anchor: refused, or
            // waited for when the Workload API may still deliver the root.
            let Some(ca) = intermediate(ca_path, trust)? else {
                return Ok(None);
            };
            if ca.subject_name().to_der().ok().as_deref() != Some(issuer.as_slice()) {
                return Err(bad(format!(
                    "issued by another CA than `{}` (its issuer)",
                    display_name(&ca)
                )));
            }
            let der = ca.to_der().map_err(|e| bad(e.to_string()))?;
            (ca, Some(der))
        }
    };
    let key = signer.public_key().map_err(|e| bad(e.to_string()))?;
    if !crl.verify(&key).unwrap_or(false) {
        return Err(bad(format!(
            "signature does not verify against its CA `{}`",
            display_name(&signer)
        )));
    }
    let next_update = crl.next_update().and_then(system_time);
    if next_update.is_some_and(|t| t < SystemTime::now()) {
        return Err(bad(
            "past its nextUpdate: fetch a fresh CRL from its CA".into()
        ));
    }
    let der = crl.to_der().map_err(|e| bad(e.to_string()))?;
    Ok(Some((
        Crl {
            crl,
            issuer_der,
            issuer,
            issuer_name: display_name(&signer),
            next_update,
            path: path.to_owned(),
        },
        der,
    )))
}

/// The intermediate CA certificate at `path`, verified to chain to an
/// anchor of `trust` (a CRL is only as good as the key that signed it);
/// `None` when it does not.
fn intermediate(path: &Path, trust: &ClientTrust) -> Result<Option<X509>, MaterialError> {
    let bad = |reason: String| MaterialError::BadCertificate {
        path: path.display().to_string(),
        reason,
    };
    let bytes = read(path)?;
    let ca = X509::from_pem(&bytes)
        .or_else(|_| X509::from_der(&bytes))
        .map_err(|_| bad("not a PEM or DER certificate".into()))?;
    let chain = Stack::new().map_err(|e| bad(e.to_string()))?;
    let mut ctx = X509StoreContext::new().map_err(|e| bad(e.to_string()))?;
    let verified = ctx
        .init(&trust.store, &ca, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok(ok.then_some(()).ok_or_else(|| c.error()))
        })
        .map_err(|e| bad(e.to_string()))?;
    Ok(verified.is_ok().then_some(ca))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::tls::x509::X509;
    use ztgate_testkit::pki::{Ca, Issued};

    fn x509(i: &Issued) -> X509 {
        X509::from_der(&i.der).unwrap()
    }

    #[test]
    fn crls_are_verified_once_and_looked_up_by_issuer_and_serial() {
        let dir = std::env::temp_dir().join(format!("ztgate-crl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let acme = Ca::new("acme.test").unwrap();
        acme.write(&dir, "acme").unwrap();
        let trust = ClientTrust::load(Some(&dir.join("acme.pem")), &[]).unwrap();
        let (bad, good) = (
            acme.svid("spiffe://acme.test/bad").unwrap(),
            acme.svid("spiffe://acme.test/good").unwrap(),
        );
        let write = |name: &str, pem: String| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        let crl = write("acme.crl", acme.crl(&[&bad], 86_400).unwrap());
        let crls = Crls::load(&[CrlSource::file(crl.clone())], &trust).unwrap();
        assert!(crls.revoking(&x509(&bad)).is_some());
        assert!(crls.revoking(&x509(&good)).is_none());
        let anchor = X509::from_pem(acme.cert_pem().as_bytes()).unwrap();
        assert_eq!(
            crls.revoked_in([&*x509(&bad), &*anchor]).as_deref(),
            Some("bad")
        );
        assert_eq!(crls.revoked_in([&*x509(&good), &*anchor]), None);
        assert!(Crls::default().revoked_in([&*x509(&bad)]).is_none());

        // Not from an anchor; signed by another key under the same name;
        // past nextUpdate; not a CRL.
        let partner = Ca::new("partner.test").unwrap();
        let impostor = Ca::new("acme.test").unwrap();
        let files = [
            write("partner.crl", partner.crl(&[], 86_400).unwrap()),
            write("impostor.crl", impostor.crl(&[&good], 86_400).unwrap()),
            write("stale.crl", acme.crl(&[], -3600).unwrap()),
            write("junk.crl", "junk".into()),
            crl.clone(),
        ];
        let errs = Crls::load(&files.map(CrlSource::file), &trust)
            .err()
            .unwrap();
        let got: Vec<(usize, String)> = errs.iter().map(|(i, e)| (*i, e.to_string())).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].1.contains("its issuer is not a CA"), "{got:?}");
        assert!(
            got[1].1.contains("does not verify against its CA"),
            "{got:?}"
        );
        assert!(got[2].1.contains("past its nextUpdate"), "{got:?}");
        assert!(got[3].1.contains("not a PEM or DER"), "{got:?}");
        assert_eq!(
            got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        // Another CRL, another digest (sessions verified under the old one
        // are not resumed).
        let other = write("other.crl", acme.crl(&[&good], 86_400).unwrap());
        assert_ne!(
            Crls::load(&[CrlSource::file(other)], &trust)
                .unwrap()
                .digest,
            crls.digest
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A CRL from an intermediate CA (`{ file, issuer }`): verified against
    /// the named intermediate, which must chain to an anchor; it revokes
    /// the intermediate's leaves, and the root's CRL the intermediate.
    #[test]
    fn an_intermediate_ca_revokes_its_leaves() {
        let dir = std::env::temp_dir().join(format!("ztgate-crl-int-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let acme = Ca::new("acme.test").unwrap();
        acme.write(&dir, "acme").unwrap();
        let trust = ClientTrust::load(Some(&dir.join("acme.pem")), &[]).unwrap();
        let inter = acme.intermediate("issuing").unwrap();
        let other = acme.intermediate("other").unwrap();
        let write = |name: &str, pem: String| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        let inter_pem = write("inter.pem", inter.cert_pem());
        let (bad, good) = (
            inter.svid("spiffe://acme.test/bad").unwrap(),
            inter.svid("spiffe://acme.test/good").unwrap(),
        );
        let pem = |s: &str| X509::from_pem(s.as_bytes()).unwrap();
        let (root, int_cert) = (pem(&acme.cert_pem()), pem(&inter.cert_pem()));
        let crl = write("inter.crl", inter.crl(&[&bad], 86_400).unwrap());
        let issued = |file: &PathBuf, issuer: &PathBuf| CrlSource {
            path: file.clone(),
            issuer: Some(issuer.clone()),
        };
        let crls = Crls::load(&[issued(&crl, &inter_pem)], &trust).unwrap();
        assert_eq!(
            crls.revoked_in([&*x509(&bad), &*int_cert, &*root])
                .as_deref(),
            Some("bad")
        );
        assert_eq!(crls.revoked_in([&*x509(&good), &*int_cert, &*root]), None);
        assert_eq!(crls.lists[0].issuer_name, "issuing intermediate CA");

        // The root's CRL revokes the intermediate: every leaf under it.
        let root_crl = write("root.crl", acme.crl_of_ca(&inter, 86_400).unwrap());
        let both = Crls::load(
            &[CrlSource::file(root_crl), issued(&crl, &inter_pem)],
            &trust,
        )
        .unwrap();
        assert_eq!(
            both.revoked_in([&*x509(&good), &*int_cert, &*root])
                .as_deref(),
            Some("issuing intermediate CA")
        );
        assert_ne!(both.digest, crls.digest);

        // Without its issuer named; named issuer that is not the CRL's; an
        // issuer that does not chain to an anchor.
        let partner = Ca::new("partner.test").unwrap().intermediate("p").unwrap();
        let files = [
            CrlSource::file(crl.clone()),
            issued(&crl, &write("other.pem", other.cert_pem())),
            issued(
                &write("partner.crl", partner.crl(&[], 86_400).unwrap()),
                &write("partner.pem", partner.cert_pem()),
            ),
        ];
        let errs = Crls::load(&files, &trust).err().unwrap();
        let got: Vec<String> = errs.iter().map(|(_, e)| e.to_string()).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].contains("its issuer is not a CA"), "{got:?}");
        assert!(got[1].contains("issued by another CA"), "{got:?}");
        assert!(got[2].contains("does not chain to a CA"), "{got:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
