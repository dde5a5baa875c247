//! The verified client certificate of a connection, reduced to the fields
//! policy needs.
//!
//! The TLS layer has already verified the chain against the trust bundle
//! during the handshake; this type only *describes* the leaf. It is built
//! once per connection (the handshake callback) or once per `ztgate explain`
//! run from a PEM file, never per request.

use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Facts about a peer (client) certificate's leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// SHA-256 of the leaf's DER encoding (the RFC 8705 thumbprint input).
    pub sha256: [u8; 32],
    /// Every URI SAN, in certificate order (an X.509-SVID has exactly one).
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    /// RFC 4514-style subject, e.g. `CN=orders,O=Acme`.
    pub subject: String,
    /// `basicConstraints cA=TRUE` on the leaf (forbidden for an SVID).
    pub is_ca: bool,
    /// `notAfter` of the leaf.
    pub not_after: SystemTime,
}

/// Why a DER blob could not be described.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerCertificateError {
    #[error("not a DER X.509 certificate: {0}")]
    Parse(String),
}

impl PeerCertificate {
    /// Describe a DER-encoded X.509 leaf certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, PeerCertificateError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| PeerCertificateError::Parse(e.to_string()))?;
        let mut uri_sans = Vec::new();
        let mut dns_sans = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uri_sans.push((*u).to_owned()),
                    GeneralName::DNSName(d) => dns_sans.push((*d).to_owned()),
                    _ => {}
                }
            }
        }
        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        let ts = cert.validity().not_after.timestamp();
        let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(ts).unwrap_or(0));
        Ok(Self {
            sha256: Sha256::digest(der).into(),
            uri_sans,
            dns_sans,
            subject: cert.subject().to_string(),
            is_ca,
            not_after,
        })
    }

    /// The thumbprint as unpadded base64url (RFC 8705 `x5t#S256`, XFCC `Hash`
    /// uses hex instead: see [`PeerCertificate::sha256_hex`]).
    pub fn thumbprint_b64url(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.sha256)
    }

    /// The thumbprint as lowercase hex (Envoy's XFCC `Hash=` format).
    pub fn sha256_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.sha256 {
            // A nibble is always a hex digit; `from_digit` cannot fail here.
            s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            s.push(char::from_digit(u32::from(b & 0x0f), 16).unwrap_or('0'));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_an_svid() {
        let mut p = rcgen::CertificateParams::new(vec!["orders.local".into()]).unwrap();
        p.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://acme.test/ns/shop/sa/orders".try_into().unwrap(),
        ));
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "orders");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let pc = PeerCertificate::from_der(cert.der()).unwrap();
        assert_eq!(pc.uri_sans, vec!["spiffe://acme.test/ns/shop/sa/orders"]);
        assert_eq!(pc.dns_sans, vec!["orders.local"]);
        assert!(pc.subject.contains("CN=orders"));
        assert!(!pc.is_ca);
        assert_eq!(pc.sha256_hex().len(), 64);
        assert_eq!(pc.thumbprint_b64url().len(), 43);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(PeerCertificate::from_der(b"").is_err());
        assert!(PeerCertificate::from_der(&[0x30, 0x82, 0xff, 0xff, 0x00]).is_err());
    }
}
