//! One OCSP exchange on paper: the request for a certificate, and what a
//! response must be to count as an answer (RFC 6960 §3.2): a successful
//! response, signed by the certificate's issuer or by a responder that
//! issuer delegated (its certificate issued by that CA, with the
//! OCSP-signing extended key usage), about this very certificate, current
//! (thisUpdate not in the future, nextUpdate not past, both within the
//! allowed clock skew) and, when a nonce was sent, echoing it.
//!
//! No network here, so every rule is unit-tested against answers from
//! OpenSSL's own responder.

use std::time::{Duration, SystemTime};

use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus,
};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Ref, X509};

use super::ffi::{self, NonceCheck};

/// What a verified response says about the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    Revoked,
    /// The responder does not know the certificate.
    Unknown,
}

impl CertStatus {
    pub fn label(self) -> &'static str {
        match self {
            CertStatus::Good => "good",
            CertStatus::Revoked => "revoked",
            CertStatus::Unknown => "unknown",
        }
    }
}

/// A verified answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: CertStatus,
    pub this_update: SystemTime,
    /// `None`: the responder promises nothing (newer status may exist at
    /// any time).
    pub next_update: Option<SystemTime>,
}

/// Why a response is not an answer (or none could be had).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspError {
    #[error("the certificate names no OCSP responder (authority information access)")]
    NoResponder,
    #[error("cannot build the OCSP request: {0}")]
    Request(String),
    #[error("OCSP responder {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("no answer from the OCSP responder within {0:?}")]
    Timeout(Duration),
    #[error("not a DER OCSP response")]
    Garbage,
    #[error("the OCSP responder answered `{0}` instead of a status")]
    Unsuccessful(&'static str),
    #[error("OCSP response signature or signer does not verify against the issuer: {0}")]
    BadSignature(String),
    #[error("OCSP response nonce does not match the request's")]
    NonceMismatch,
    #[error("OCSP response does not answer for this certificate")]
    NotAnswered,
    #[error("OCSP response is not current: {0}")]
    Stale(&'static str),
    #[error("the OCSP responder says the certificate is {0}")]
    NotGood(&'static str),
}

/// An OCSP request for one certificate, kept to check the response against.
pub struct Prepared {
    pub request: OcspRequest,
    /// The same CertID as in the request (an `OcspCertId` is consumed by
    /// the request, so it is made twice).
    id: OcspCertId,
    nonce: bool,
}

impl Prepared {
    /// A request for `cert`, issued by `issuer`. CertID hashes are SHA-1,
    /// what RFC 5019 responders (and pre-signed answers) index by.
    pub fn new(cert: &X509Ref, issuer: &X509Ref, nonce: bool) -> Result<Self, OcspError> {
        let err = |e: openssl::error::ErrorStack| OcspError::Request(e.to_string());
        let mut request = OcspRequest::new().map_err(err)?;
        request
            .add_id(OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer).map_err(err)?)
            .map_err(err)?;
        if nonce {
            ffi::add_nonce(&mut request).map_err(err)?;
        }
        let id = OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer).map_err(err)?;
        Ok(Self { request, id, nonce })
    }

    pub fn der(&self) -> Result<Vec<u8>, OcspError> {
        self.request
            .to_der()
            .map_err(|e| OcspError::Request(e.to_string()))
    }

    /// Check `der` as the answer to this request from the responder of
    /// `issuer`'s certificates, at `now`, allowing `skew` of clock
    /// difference.
    pub fn verify(
        &self,
        der: &[u8],
        issuer: &X509,
        now: SystemTime,
        skew: Duration,
    ) -> Result<Answer, OcspError> {
        let resp = OcspResponse::from_der(der).map_err(|_| OcspError::Garbage)?;
        let status = resp.status();
        if status != OcspResponseStatus::SUCCESSFUL {
            return Err(OcspError::Unsuccessful(response_status_name(status)));
        }
        let basic = resp.basic().map_err(|_| OcspError::Garbage)?;
        // The issuer is the one anchor: the signer must be it, or chain to
        // it (partial chain: the issuer may be an intermediate) and carry
        // the OCSP-signing EKU (OpenSSL's OCSP_basic_verify checks both).
        // It is also offered as a candidate signer, for responses signed by
        // the CA itself that do not include its certificate.
        let bad = |e: openssl::error::ErrorStack| OcspError::BadSignature(first_reason(&e));
        let mut store = X509StoreBuilder::new().map_err(bad)?;
        store.add_cert(issuer.clone()).map_err(bad)?;
        store
            .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
            .map_err(bad)?;
        let store = store.build();
        let mut certs = Stack::new().map_err(bad)?;
        certs.push(issuer.clone()).map_err(bad)?;
        basic
            .verify(&certs, &store, OcspFlag::empty())
            .map_err(bad)?;
        if self.nonce && ffi::check_nonce(&self.request, &basic) == NonceCheck::Mismatch {
            return Err(OcspError::NonceMismatch);
        }
        let found = basic.find_status(&self.id).ok_or(OcspError::NotAnswered)?;
        let this_update =
            ffi::generalized_time(found.this_update).ok_or(OcspError::Stale("bad thisUpdate"))?;
        let next_update = match found.next_update() {
            Some(t) => Some(ffi::generalized_time(t).ok_or(OcspError::Stale("bad nextUpdate"))?),
            None => None,
        };
        if this_update > now + skew {
            return Err(OcspError::Stale("thisUpdate is in the future"));
        }
        if next_update.is_some_and(|n| n + skew < now) {
            return Err(OcspError::Stale("past its nextUpdate"));
        }
        if next_update.is_some_and(|n| n < this_update) {
            return Err(OcspError::Stale("nextUpdate before thisUpdate"));
        }
        let status = match found.status {
            OcspCertStatus::GOOD => CertStatus::Good,
            OcspCertStatus::REVOKED => CertStatus::Revoked,
            _ => CertStatus::Unknown,
        };
        Ok(Answer {
            status,
            this_update,
            next_update,
        })
    }
}

fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_owned))
        .unwrap_or_else(|| "verification failed".into())
}

fn response_status_name(s: OcspResponseStatus) -> &'static str {
    match s {
        OcspResponseStatus::MALFORMED_REQUEST => "malformedRequest",
        OcspResponseStatus::INTERNAL_ERROR => "internalError",
        OcspResponseStatus::TRY_LATER => "tryLater",
        OcspResponseStatus::SIG_REQUIRED => "sigRequired",
        OcspResponseStatus::UNAUTHORIZED => "unauthorized",
        _ => "an unknown response status",
    }
}

/// The first OCSP responder URL of `cert`'s authority information access.
pub fn responder_url(cert: &X509Ref) -> Option<String> {
    cert.ocsp_responders()
        .ok()?
        .iter()
        .next()
        .map(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztgate_testkit::ocsp::{Files, Signer};
    use ztgate_testkit::pki::{Ca, Issued, LeafSpec};

    const SKEW: Duration = Duration::from_secs(300);

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ztgate-ocsp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn x509(i: &Issued) -> X509 {
        X509::from_der(&i.der).unwrap()
    }

    fn ca_x509(ca: &Ca) -> X509 {
        X509::from_pem(ca.cert_pem().as_bytes()).unwrap()
    }

    fn index(files: &Files, lines: &[(&Issued, bool)]) {
        let mut text = String::new();
        for (i, revoked) in lines {
            let serial = ztgate_testkit::ocsp::serial_hex(&i.serial);
            text += &if *revoked {
                format!("R\t991231235959Z\t250101000000Z\t{serial}\tunknown\t/CN=x\n")
            } else {
                format!("V\t991231235959Z\t\t{serial}\tunknown\t/CN=x\n")
            };
        }
        std::fs::write(&files.index, text).unwrap();
    }

    async fn ask(files: &Files, leaf: &Issued, issuer: &Ca, nonce: bool) -> (Prepared, Vec<u8>) {
        let p = Prepared::new(&x509(leaf), &ca_x509(issuer), nonce).unwrap();
        let der = files.answer(&p.der().unwrap()).await.unwrap();
        (p, der)
    }

    #[tokio::test]
    async fn answers_from_the_issuer_or_its_delegate_are_read() {
        let ca = Ca::new("acme.test").unwrap();
        let (good, revoked, stranger) = (
            ca.svid("spiffe://acme.test/good").unwrap(),
            ca.svid("spiffe://acme.test/revoked").unwrap(),
            ca.svid("spiffe://acme.test/stranger").unwrap(),
        );
        for (name, signer) in [("delegated", Signer::Delegated), ("ca", Signer::Ca)] {
            let files = Files::write(&dir(name), &ca, signer).unwrap();
            index(&files, &[(&good, false), (&revoked, true)]);
            let issuer = ca_x509(&ca);
            let now = SystemTime::now();
            for (leaf, want) in [
                (&good, CertStatus::Good),
                (&revoked, CertStatus::Revoked),
                (&stranger, CertStatus::Unknown),
            ] {
                let (p, der) = ask(&files, leaf, &ca, false).await;
                let a = p.verify(&der, &issuer, now, SKEW).unwrap();
                assert_eq!(a.status, want, "{name}");
                let next = a.next_update.unwrap();
                assert!(next > now + Duration::from_secs(3600), "{name}");
                assert!(a.this_update <= now + SKEW, "{name}");
            }
            let _ = std::fs::remove_dir_all(&files.dir);
        }
    }

    #[tokio::test]
    async fn wrong_signers_are_refused() {
        let ca = Ca::new("acme.test").unwrap();
        let leaf = ca.svid("spiffe://acme.test/w").unwrap();
        // A delegated responder of another CA (even one of the same name),
        // and a plain leaf of the right CA without the OCSP-signing EKU.
        let other = Ca::new("acme.test").unwrap();
        let foreign = other
            .issue(&LeafSpec {
                common_name: "ocsp".into(),
                ocsp_signing: true,
                ..LeafSpec::default()
            })
            .unwrap();
        let no_eku = ca.svid("spiffe://acme.test/not-a-responder").unwrap();
        for (name, signer) in [("foreign", &foreign), ("no-eku", &no_eku)] {
            let mut files = Files::write(&dir(name), &ca, Signer::Other(signer)).unwrap();
            files.next_update_minutes = Some(10);
            index(&files, &[(&leaf, false)]);
            let (p, der) = ask(&files, &leaf, &ca, false).await;
            let e = p
                .verify(&der, &ca_x509(&ca), SystemTime::now(), SKEW)
                .unwrap_err();
            assert!(matches!(e, OcspError::BadSignature(_)), "{name}: {e:?}");
            let _ = std::fs::remove_dir_all(&files.dir);
        }
        // The CA signing for itself, checked against another issuer.
        let files = Files::write(&dir("other-issuer"), &ca, Signer::Ca).unwrap();
        index(&files, &[(&leaf, false)]);
        let (p, der) = ask(&files, &leaf, &ca, false).await;
        let e = p
            .verify(&der, &ca_x509(&other), SystemTime::now(), SKEW)
            .unwrap_err();
        assert!(matches!(e, OcspError::BadSignature(_)), "{e:?}");
        let _ = std::fs::remove_dir_all(&files.dir);
    }

    #[tokio::test]
    async fn stale_and_future_answers_are_refused() {
        let ca = Ca::new("acme.test").unwrap();
        let leaf = ca.svid("spiffe://acme.test/w").unwrap();
        let mut files = Files::write(&dir("stale"), &ca, Signer::Delegated).unwrap();
        files.next_update_minutes = Some(10);
        index(&files, &[(&leaf, false)]);
        let (p, der) = ask(&files, &leaf, &ca, false).await;
        let issuer = ca_x509(&ca);
        let now = SystemTime::now();
        assert!(p.verify(&der, &issuer, now, SKEW).is_ok());
        // An hour on: past nextUpdate (+10 min) and the 5 min skew.
        let later = now + Duration::from_secs(3600);
        assert_eq!(
            p.verify(&der, &issuer, later, SKEW),
            Err(OcspError::Stale("past its nextUpdate"))
        );
        // Within the skew of nextUpdate: still current.
        let just_after = now + Duration::from_secs(600 + 60);
        assert!(p.verify(&der, &issuer, just_after, SKEW).is_ok());
        // A clock an hour behind the responder's.
        let earlier = now - Duration::from_secs(3600);
        assert_eq!(
            p.verify(&der, &issuer, earlier, SKEW),
            Err(OcspError::Stale("thisUpdate is in the future"))
        );
        let _ = std::fs::remove_dir_all(&files.dir);
    }

    #[tokio::test]
    async fn nonces_must_match_when_echoed() {
        let ca = Ca::new("acme.test").unwrap();
        let leaf = ca.svid("spiffe://acme.test/w").unwrap();
        let files = Files::write(&dir("nonce"), &ca, Signer::Delegated).unwrap();
        index(&files, &[(&leaf, false)]);
        let issuer = ca_x509(&ca);
        let now = SystemTime::now();
        // Echoed: fine.
        let (p, der) = ask(&files, &leaf, &ca, true).await;
        assert_eq!(
            p.verify(&der, &issuer, now, SKEW).unwrap().status,
            CertStatus::Good
        );
        // The answer to another request (another nonce): a replay.
        let (other, _) = ask(&files, &leaf, &ca, true).await;
        assert_eq!(
            other.verify(&der, &issuer, now, SKEW),
            Err(OcspError::NonceMismatch)
        );
        // A responder that sends no nonce (pre-signed answers) is accepted.
        let (_, plain) = ask(&files, &leaf, &ca, false).await;
        assert!(p.verify(&plain, &issuer, now, SKEW).is_ok());
        let _ = std::fs::remove_dir_all(&files.dir);
    }

    #[tokio::test]
    async fn garbage_and_answers_about_other_certificates_are_refused() {
        let ca = Ca::new("acme.test").unwrap();
        let (leaf, other) = (
            ca.svid("spiffe://acme.test/w").unwrap(),
            ca.svid("spiffe://acme.test/x").unwrap(),
        );
        let files = Files::write(&dir("garbage"), &ca, Signer::Delegated).unwrap();
        index(&files, &[(&leaf, false), (&other, false)]);
        let issuer = ca_x509(&ca);
        let now = SystemTime::now();
        let p = Prepared::new(&x509(&leaf), &issuer, false).unwrap();
        assert_eq!(
            p.verify(b"junk", &issuer, now, SKEW),
            Err(OcspError::Garbage)
        );
        assert_eq!(p.verify(&[], &issuer, now, SKEW), Err(OcspError::Garbage));
        // OCSPResponse { responseStatus tryLater(3) } and nothing else.
        assert_eq!(
            p.verify(&[0x30, 0x03, 0x0a, 0x01, 0x03], &issuer, now, SKEW),
            Err(OcspError::Unsuccessful("tryLater"))
        );
        // A genuine, signed answer, about another certificate.
        let (_, der) = ask(&files, &other, &ca, false).await;
        assert_eq!(
            p.verify(&der, &issuer, now, SKEW),
            Err(OcspError::NotAnswered)
        );
        // A truncated one.
        let (_, der) = ask(&files, &leaf, &ca, false).await;
        assert_eq!(
            p.verify(&der[..der.len() / 2], &issuer, now, SKEW),
            Err(OcspError::Garbage)
        );
        let _ = std::fs::remove_dir_all(&files.dir);
    }

    #[test]
    fn the_responder_url_comes_from_the_aia() {
        let ca = Ca::new("acme.test").unwrap();
        let with = ca
            .issue(&LeafSpec {
                common_name: "w".into(),
                ocsp_url: Some("http://127.0.0.1:9/ocsp".into()),
                ..LeafSpec::default()
            })
            .unwrap();
        assert_eq!(
            responder_url(&x509(&with)).as_deref(),
            Some("http://127.0.0.1:9/ocsp")
        );
        let without = ca.svid("spiffe://acme.test/w").unwrap();
        assert_eq!(responder_url(&x509(&without)), None);
    }
}
