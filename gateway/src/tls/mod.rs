//! Downstream TLS: the listener's settings and the per-handshake callbacks.
//!
//! The server certificate, its key and the client trust bundle live in one
//! [`ArcSwap`]: Pingora's `certificate_callback` runs on every handshake and
//! installs the current material on that connection (notes §2), so a reload
//! swaps what new handshakes use while open connections keep theirs.
//! `handshake_complete_callback` describes the verified peer once per
//! connection ([`TlsFacts`]), which every request on it then reads.

pub mod material;

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;
use pingora::tls::ssl::{NameType, SslVerifyMode, SslVersion};
use ztgate_filter::{PeerCertificate, TlsFacts};

use crate::config::raw::{ClientAuth, TlsVersion};
use material::{CertAndKey, MaterialError, Part, TrustBundle};

/// What a handshake needs; swapped whole on reload.
pub struct ServerMaterial {
    pub identity: CertAndKey,
    pub client_ca: TrustBundle,
}

impl ServerMaterial {
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: &Path,
    ) -> Result<Self, Vec<(Part, MaterialError)>> {
        let identity = CertAndKey::load(cert, key).and_then(|ck| {
            // An expired server certificate fails every handshake: refuse it
            // at check/load so a reload keeps the working one.
            match ck.not_after() {
                Some(t) if t < std::time::SystemTime::now() => Err(vec![(
                    Part::Cert,
                    MaterialError::Expired {
                        path: cert.display().to_string(),
                    },
                )]),
                _ => Ok(ck),
            }
        });
        let ca = TrustBundle::load(client_ca).map_err(|e| (Part::ClientCa, e));
        match (identity, ca) {
            (Ok(identity), Ok(client_ca)) => Ok(Self {
                identity,
                client_ca,
            }),
            (a, b) => {
                let mut errs = a.err().unwrap_or_default();
                errs.extend(b.err());
                Err(errs)
            }
        }
    }
}

/// The per-handshake callbacks.
pub struct Handshake {
    pub material: Arc<ArcSwap<ServerMaterial>>,
}

#[async_trait]
impl TlsAccept for Handshake {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let m = self.material.load();
        let mut ok = true;
        if let Some((leaf, rest)) = m.identity.chain.split_first() {
            ok &= ext::ssl_use_certificate(ssl, leaf).is_ok();
            for c in rest {
                ok &= ext::ssl_add_chain_cert(ssl, c).is_ok();
            }
        }
        ok &= ext::ssl_use_private_key(ssl, &m.identity.key).is_ok();
        ok &= ext::ssl_set_verify_cert_store(ssl, &m.client_ca.store).is_ok();
        if !ok {
            // The handshake then fails for lack of a certificate: loud and safe.
            tracing::error!("could not install server certificate on a TLS handshake");
        }
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(describe_connection(ssl)))
    }
}

/// What the TLS layer knows about a finished handshake.
fn describe_connection(ssl: &TlsRef) -> TlsFacts {
    let peer = ssl
        .peer_certificate()
        .and_then(|c| c.to_der().ok())
        .and_then(|der| match PeerCertificate::from_der(&der) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                tracing::warn!(error = %e, "verified client certificate could not be described");
                None
            }
        });
    TlsFacts {
        peer,
        ja4: crate::ja4::take_ja4(ssl),
        sni: ssl.servername(NameType::HOST_NAME).map(str::to_owned),
        alpn: ssl
            .selected_alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    }
}

/// Build the listener's TLS settings: TLS 1.2+ (1.3 preferred by OpenSSL),
/// ALPN h2 then http/1.1, client certificates verified per `client_auth`.
pub fn listener_settings(
    handshake: Handshake,
    client_auth: ClientAuth,
    min_version: TlsVersion,
) -> pingora::Result<TlsSettings> {
    use pingora::{Error, ErrorType::InternalError, OrErr};
    let mut tls = TlsSettings::with_callbacks(Box::new(handshake))?;
    let mode = match client_auth {
        ClientAuth::Require => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        ClientAuth::Optional => SslVerifyMode::PEER,
    };
    tls.set_verify(mode);
    tls.set_verify_depth(8);
    // Session resumption with client auth needs a session id context.
    tls.set_session_id_context(b"ztgate")
        .or_err(InternalError, "session id context")?;
    // One TLS 1.3 ticket instead of OpenSSL's default two: each ticket
    // copies the session, client certificate included, through DER
    // encode/decode (measured: 8% less CPU per full handshake with one), and a
    // gRPC client keeps one long-lived connection anyway.
    tls.set_num_tickets(1)
        .or_err(InternalError, "session tickets")?;
    let min = match min_version {
        TlsVersion::Tls12 => SslVersion::TLS1_2,
        TlsVersion::Tls13 => SslVersion::TLS1_3,
    };
    tls.set_min_proto_version(Some(min))
        .or_err(InternalError, "min TLS version")?;
    crate::ja4::install(&mut tls)
        .map_err(|e| Error::because(InternalError, "client hello callback", e))?;
    tls.enable_h2();
    Ok(tls)
}
