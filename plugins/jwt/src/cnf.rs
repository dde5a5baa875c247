//! RFC 8705 §3: certificate-bound access tokens. A token carrying
//! `cnf.x5t#S256` is only good on a connection whose client certificate has
//! that SHA-256 thumbprint, so a stolen token is useless without the key.

use subtle::ConstantTimeEq;
use ztgate_filter::PeerCertificate;

use crate::config::CertBinding;
use crate::JwtError;

/// Check the token's certificate binding against the connection's peer.
pub fn check(
    mode: CertBinding,
    cnf_x5t: Option<&str>,
    peer: Option<&PeerCertificate>,
) -> Result<(), JwtError> {
    let bound = match (mode, cnf_x5t) {
        (CertBinding::Off, _) => return Ok(()),
        (CertBinding::Require, None) => return Err(JwtError::CertBindingMissing),
        (CertBinding::IfPresent, None) => return Ok(()),
        (_, Some(b)) => b,
    };
    let Some(peer) = peer else {
        // Bound to a certificate, presented without one.
        return Err(JwtError::CertBindingMismatch);
    };
    let actual = peer.thumbprint_b64url();
    // Constant time: the thumbprint is public, but the compare must not
    // become an oracle for crafting a matching claim byte by byte.
    if bool::from(actual.as_bytes().ct_eq(bound.as_bytes())) {
        Ok(())
    } else {
        Err(JwtError::CertBindingMismatch)
    }
}
