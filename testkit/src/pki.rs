//! A throw-away PKI: one CA per trust domain, server and client (SVID)
//! certificates, written as PEM files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams,
    CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A certificate authority that can issue leaves.
pub struct Ca {
    pub cert: Certificate,
    key: KeyPair,
    /// For an intermediate CA: its certificate and those above it up to
    /// (not including) the root, PEM — what a client sends after its leaf.
    chain_pem: String,
    /// This CA certificate's serial (a parent's CRL names it by it).
    serial: Vec<u8>,
}

/// A PEM certificate and key, plus where they were written (if they were).
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    /// The certificate's serial number (big-endian), for CRLs.
    pub serial: Vec<u8>,
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
    /// An OCSP responder URL in the authority information access extension.
    pub ocsp_url: Option<String>,
    /// An OCSP responder's own certificate: only the OCSP-signing extended
    /// key usage (RFC 6960 §4.2.2.2, a delegated responder).
    pub ocsp_signing: bool,
}

/// The authority information access extension (RFC 5280 §4.2.2.1) naming
/// one OCSP responder, DER-encoded by hand (rcgen has no builder for it).
pub fn aia_ocsp(url: &str) -> CustomExtension {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = body.len();
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let len: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | len.len() as u8);
            out.extend(len);
        }
        out.extend_from_slice(body);
        out
    }
    // id-ad-ocsp, 1.3.6.1.5.5.7.48.1
    let method = tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01]);
    // GeneralName uniformResourceIdentifier: [6] IMPLICIT IA5String
    let location = tlv(0x86, url.as_bytes());
    let description = tlv(0x30, &[method, location].concat());
    // id-pe-authorityInfoAccess, 1.3.6.1.5.5.7.1.1
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], tlv(0x30, &description))
}

/// A serial unique per process run (CRLs name certificates by it):
/// positive and minimal (no leading zero bytes, top bit clear).
fn next_serial() -> Vec<u8> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let serial = ((nanos << 16) ^ n).to_be_bytes().to_vec();
    let mut serial: Vec<u8> = serial.into_iter().skip_while(|b| *b == 0).collect();
    if serial.first().is_none_or(|b| b & 0x80 != 0) {
        serial.insert(0, 0);
    }
    serial
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
        Ok(Self {
            cert,
            key,
            chain_pem: String::new(),
            serial: Vec::new(),
        })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// An intermediate CA issued by this one: its leaves' `cert_pem` carries
    /// the intermediate after the leaf, as a client sends its chain.
    pub fn intermediate(&self, name: &str) -> anyhow::Result<Ca> {
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} intermediate CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(1);
        let serial = next_serial();
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        let chain_pem = format!("{}{}", cert.pem(), self.chain_pem);
        Ok(Ca {
            cert,
            key,
            chain_pem,
            serial,
        })
    }

    /// The CA's private key (PEM), for tools that sign as the CA (an OCSP
    /// responder answering for itself).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
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
        p.extended_key_usages = if spec.ocsp_signing {
            vec![ExtendedKeyUsagePurpose::OcspSigning]
        } else {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        };
        if let Some(url) = &spec.ocsp_url {
            p.custom_extensions.push(aia_ocsp(url));
        }
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
        let serial = next_serial();
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: format!("{}{}", cert.pem(), self.chain_pem),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            serial,
        })
    }

    /// A CRL signed by this CA listing `revoked`, whose nextUpdate is
    /// `next_update_secs` from now (negative: already past).
    pub fn crl(&self, revoked: &[&Issued], next_update_secs: i64) -> anyhow::Result<String> {
        let now = OffsetDateTime::now_utc();
        let next_update = Duration::seconds(next_update_secs);
        let this_update = (now - Duration::hours(2)).min(now + next_update - Duration::hours(1));
        let params = CertificateRevocationListParams {
            this_update,
            next_update: now + next_update,
            crl_number: SerialNumber::from(now.unix_timestamp() as u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|i| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&i.serial),
                    revocation_time: now - Duration::minutes(5),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.cert, &self.key)?.pem()?)
    }

    /// A CRL signed by this CA that revokes the intermediate CA `revoked`
    /// (issued by this one).
    pub fn crl_of_ca(&self, revoked: &Ca, next_update_secs: i64) -> anyhow::Result<String> {
        let as_issued = Issued {
            cert_pem: revoked.cert.pem(),
            key_pem: String::new(),
            der: revoked.cert.der().to_vec(),
            serial: revoked.serial.clone(),
        };
        self.crl(&[&as_issued], next_update_secs)
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
