//! A throw-away PKI: one CA per trust domain, server and client (SVID)
//! certificates, written as PEM files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A certificate authority that can issue leaves.
pub struct Ca {
    pub cert: Certificate,
    key: KeyPair,
}

/// A PEM certificate and key, plus where they were written (if they were).
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Issued {
    /// Write `NAME.pem` and `NAME-key.pem` into `dir`; returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.cert_pem).with_context(|| cert.display().to_string())?;
        std::fs::write(&key, &self.key_pem).with_context(|| key.display().to_string())?;
        Ok((cert, key))
    }
}

/// What kind of leaf to issue.
#[derive(Clone, Debug, Default)]
pub struct LeafSpec {
    pub common_name: String,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    /// Expired an hour ago instead of valid for a day.
    pub expired: bool,
    /// Mark the leaf as a CA (not a valid SVID).
    pub is_ca: bool,
}

impl Ca {
    /// A new self-signed CA named after its trust domain.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(1);
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Write the CA certificate as `NAME.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
        let p = dir.join(format!("{name}.pem"));
        std::fs::write(&p, self.cert.pem()).with_context(|| p.display().to_string())?;
        Ok(p)
    }

    /// Issue a leaf certificate.
    pub fn issue(&self, spec: &LeafSpec) -> anyhow::Result<Issued> {
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, spec.common_name.clone());
        for d in &spec.dns {
            p.subject_alt_names
                .push(SanType::DnsName(d.clone().try_into()?));
        }
        for u in &spec.uris {
            p.subject_alt_names
                .push(SanType::URI(u.clone().try_into()?));
        }
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.is_ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let now = OffsetDateTime::now_utc();
        if spec.expired {
            p.not_before = now - Duration::days(2);
            p.not_after = now - Duration::hours(1);
        } else {
            p.not_before = now - Duration::hours(1);
            p.not_after = now + Duration::days(1);
        }
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }

    /// A server certificate for `localhost` / 127.0.0.1.
    pub fn server(&self) -> anyhow::Result<Issued> {
        self.issue(&LeafSpec {
            common_name: "localhost".into(),
            dns: vec!["localhost".into()],
            ..LeafSpec::default()
        })
    }

    /// A client X.509-SVID for `spiffe_id`.
    pub fn svid(&self, spiffe_id: &str) -> anyhow::Result<Issued> {
        self.issue(&LeafSpec {
            common_name: spiffe_id.rsplit('/').next().unwrap_or("client").into(),
            uris: vec![spiffe_id.into()],
            ..LeafSpec::default()
        })
    }
}
