//! Certificate revocation lists for client certificates
//! (`listener.tls.crl`).
//!
//! Each CRL must be issued by one of the trust anchors (`client_ca` or a
//! trust bundle) and is verified against it once, when loaded, so a
//! handshake costs only a lookup by serial per certificate of the chain
//! (OpenSSL keeps a CRL's entries sorted). A CRL issued by an intermediate
//! CA, whose certificate only the client sends, is refused at load: name its
//! issuer in a bundle, or have the root list the intermediate.
//!
//! A CRL past its nextUpdate is refused by `check` and by a reload (which
//! keeps the old material); one that expires while in use goes on being
//! applied (its revocations still hold) and shows in
//! `ztgate_crl_next_update_timestamp_seconds`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pingora::tls::x509::{CrlStatus, X509Crl, X509Ref};
use sha2::{Digest, Sha256};

use super::material::{display_name, read, system_time, MaterialError, TrustDigest};
use super::trust::ClientTrust;

/// One loaded, verified CRL.
pub struct Crl {
    crl: X509Crl,
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
        paths: &[PathBuf],
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
        paths: &[PathBuf],
        trust: &ClientTrust,
        defer_unknown_issuers: bool,
    ) -> Result<Self, Vec<(usize, MaterialError)>> {
        let mut lists = Vec::new();
        let mut problems = Vec::new();
        let mut h = Sha256::new();
        h.update(b"ztgate crls v1\0");
        for (i, path) in paths.iter().enumerate() {
            match load_one(path, trust) {
                Ok(Some((crl, der))) => {
                    h.update((der.len() as u64).to_be_bytes());
                    h.update(&der);
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
                        reason: UNKNOWN_ISSUER.into(),
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
fn load_one(path: &Path, trust: &ClientTrust) -> Result<Option<(Crl, Vec<u8>)>, MaterialError> {
    let bytes = read(path)?;
    let bad = |reason: String| MaterialError::BadCertificate {
        path: path.display().to_string(),
        reason,
    };
    let crl = X509Crl::from_pem(&bytes)
        .or_else(|_| X509Crl::from_der(&bytes))
        .map_err(|_| bad("not a PEM or DER certificate revocation list".into()))?;
    let issuer = crl.issuer_name().to_der().map_err(|e| bad(e.to_string()))?;
    let Some(anchor) = trust
        .anchors()
        .map(|(_, c)| c)
        .find(|c| c.subject_name().to_der().ok().as_deref() == Some(issuer.as_slice()))
    else {
        return Ok(None);
    };
    let key = anchor.public_key().map_err(|e| bad(e.to_string()))?;
    if !crl.verify(&key).unwrap_or(false) {
        return Err(bad(format!(
            "signature does not verify against its CA `{}`",
            display_name(anchor)
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
            issuer,
            issuer_name: display_name(anchor),
            next_update,
            path: path.to_owned(),
        },
        der,
    )))
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
        let crls = Crls::load(std::slice::from_ref(&crl), &trust).unwrap();
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
        let errs = Crls::load(&files, &trust).err().unwrap();
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
        assert_ne!(Crls::load(&[other], &trust).unwrap().digest, crls.digest);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
