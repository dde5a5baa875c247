//! Downstream TLS: the listener's settings and the per-handshake callbacks.
//!
//! The server certificate, its key and the client trust bundle live in one
//! [`ArcSwap`]: Pingora's `certificate_callback` runs on every handshake and
//! installs the current material on that connection (notes §2), so a reload
//! swaps what new handshakes use while open connections keep theirs.
//! `handshake_complete_callback` describes the verified peer once per
//! connection ([`TlsFacts`]), which every request on it then reads.
//!
//! A resumed session skips certificate verification: a PSK handshake sends
//! no Certificate and no CertificateVerify, and carries the authentication
//! of the handshake that issued the ticket (RFC 8446 §2.2; the same holds
//! for TLS 1.2 session ids and tickets). So a session is bound to the trust
//! it was verified against: each connection's session id context is the
//! [`ServerMaterial::trust_id`] in force when its ClientHello arrived
//! ([`bind_session_to_trust`]), and OpenSSL resumes a session only under
//! the context it was made in. After a reload that changes the client CA
//! bundle, a session from before falls back to a full handshake, verified
//! against the bundle in force now; a reload that changes only the server
//! certificate leaves resumption alone.
//!
//! OCSP (`ocsp`) is not part of that context: revocation status changes
//! without a reload, so every handshake, resumed or not, is checked after
//! it completes, from a cache the verify callback also reads. The status
//! callback staples the server certificate's OCSP response (`stapling`).

pub mod material;
pub mod ocsp;
pub mod revocation;
pub mod stapling;
pub mod trust;

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use openssl::ex_data::Index;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;
use pingora::tls::ssl::{ClientHelloResponse, NameType, Ssl, SslRef, SslVerifyMode, SslVersion};
use pingora::tls::x509::{X509StoreContext, X509StoreContextRef, X509VerifyResult, X509};
use ztgate_filter::{PeerCertificate, TlsFacts};

use crate::config::raw::{ClientAuth, TlsVersion};
use material::{CertAndKey, MaterialError, Part, TrustBundle, TrustDigest};
use ocsp::{ClientOcsp, Outcome};
use revocation::{CrlSource, Crls};
use stapling::Stapler;
use trust::ClientTrust;

/// What a handshake needs; swapped whole on reload, and on each update
/// from the SPIFFE Workload API (`crate::spiffe`).
pub struct ServerMaterial {
    /// The server certificate and key: `listener.tls.cert`/`key`, or the
    /// gateway's SVID. `None` only while the Workload API has never
    /// delivered one: handshakes then fail (and `/readyz` says why).
    pub identity: Option<CertAndKey>,
    /// `listener.tls.client_ca` and `mtls.trust_bundles`, with the Workload
    /// API's bundles.
    pub trust: ClientTrust,
    /// `listener.tls.crl`.
    pub crls: Crls,
    /// `listener.tls.ocsp` (absent when `off`). Not part of the trust id:
    /// revocation status changes without a reload, so every handshake,
    /// resumed ones included, is checked (see `ocsp`).
    pub ocsp: Option<Arc<ClientOcsp>>,
    /// `listener.tls.ocsp_stapling`: the staple of `identity`'s certificate.
    pub stapling: Option<Arc<Stapler>>,
    /// See [`Self::trust_id`].
    trust_id: TrustDigest,
}

/// The listener's material as the config files give it, loaded once per
/// generation: a Workload API update is combined with it
/// ([`ServerMaterial::compose`]) without reading the certificates again.
pub struct FileMaterial {
    /// `listener.tls.cert`/`key`; `None` when the Workload API supplies
    /// the listener's identity.
    pub identity: Option<CertAndKey>,
    pub client_ca: Option<TrustBundle>,
    /// `mtls.trust_bundles`.
    pub domains: BTreeMap<String, TrustBundle>,
    /// `listener.tls.crl`, read and verified against the trust in force at
    /// each composition (a Workload API bundle may be the CRL's issuer).
    pub crl_paths: Vec<CrlSource>,
    /// `listener.tls.ocsp`, set by the config build after loading.
    pub ocsp: Option<Arc<ClientOcsp>>,
    /// `listener.tls.ocsp_stapling`: the stapler of `identity`, set by the
    /// config build after loading.
    pub stapling: Option<Arc<Stapler>>,
}

/// What the SPIFFE Workload API adds to a composition.
#[derive(Default)]
pub struct WorkloadParts<'a> {
    /// The gateway's SVID as the listener's certificate and key.
    pub identity: Option<&'a CertAndKey>,
    /// Bundles per trust domain; for a trust domain the files name too,
    /// the Workload API's bundle is the one used (the agent is the
    /// authority for what it serves; files fill in the other domains).
    pub bundles: Option<&'a BTreeMap<String, TrustBundle>>,
    /// Client trust comes from the Workload API: a CRL whose issuer is not
    /// an anchor yet is left out (with a warning) rather than refused, as
    /// its CA's bundle may not have arrived.
    pub trust_from_api: bool,
}

impl FileMaterial {
    /// Load what the files name; every problem is reported with its key.
    /// `identity` is `None` when the Workload API supplies the server
    /// certificate. `check_crls`: verify the CRLs against the file trust
    /// now (off when a Workload API bundle may be their issuer; they are
    /// then verified at each composition).
    pub fn load(
        identity: Option<(&Path, &Path)>,
        client_ca: Option<&Path>,
        trust_bundles: &[(String, PathBuf)],
        crls: &[CrlSource],
        check_crls: bool,
    ) -> Result<Self, Vec<(Part, MaterialError)>> {
        let identity = match identity {
            None => Ok(None),
            Some((cert, key)) => CertAndKey::load(cert, key).and_then(|ck| {
                // An expired server certificate fails every handshake: refuse it
                // at check/load so a reload keeps the working one.
                match ck.not_after() {
                    Some(t) if t < std::time::SystemTime::now() => Err(vec![(
                        Part::Cert,
                        MaterialError::Expired {
                            path: cert.display().to_string(),
                        },
                    )]),
                    _ => Ok(Some(ck)),
                }
            }),
        };
        let trust = ClientTrust::load(client_ca, trust_bundles).map_err(|errs| {
            errs.into_iter()
                .map(|(source, e)| (Part::Trust(source), e))
                .collect::<Vec<_>>()
        });
        let crl_check = match &trust {
            Ok(t) if check_crls => Crls::load(crls, t).map(|_| ()).map_err(|errs| {
                errs.into_iter()
                    .map(|(i, e)| (Part::Crl(i), e))
                    .collect::<Vec<_>>()
            }),
            _ => Ok(()),
        };
        match (identity, trust, crl_check) {
            (Ok(identity), Ok(trust), Ok(())) => Ok(Self {
                identity,
                client_ca: trust.client_ca,
                domains: trust.domains,
                crl_paths: crls.to_vec(),
                ocsp: None,
                stapling: None,
            }),
            (a, b, c) => {
                let mut errs = a.err().unwrap_or_default();
                errs.extend(b.err().unwrap_or_default());
                errs.extend(c.err().unwrap_or_default());
                Err(errs)
            }
        }
    }
}

impl ServerMaterial {
    /// What decides whether a client certificate is trusted, as a digest:
    /// the session id context of the connections that use this material.
    ///
    /// Only the client trust (`client_ca`, the bundles per trust domain and
    /// the CRLs): the part of the material that verification reads. The server certificate and key are left out on
    /// purpose, so rotating them keeps sessions resumable. The verify mode
    /// (`client_auth`) and depth are fixed for the life of the process; a
    /// restart that changes them also starts with new ticket keys and an
    /// empty session cache, which ends every session anyway.
    pub fn trust_id(&self) -> &TrustDigest {
        &self.trust_id
    }

    /// Material from files only (the tests' shortcut; the config build
    /// goes through [`FileMaterial::load`] and [`Self::compose`]).
    #[cfg(test)]
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        trust_bundles: &[(String, PathBuf)],
        crls: &[CrlSource],
    ) -> Result<Self, Vec<(Part, MaterialError)>> {
        let files = FileMaterial::load(Some((cert, key)), client_ca, trust_bundles, crls, true)?;
        Self::compose(&files, &WorkloadParts::default())
    }

    /// The material of `files` with the Workload API's `workload` parts
    /// over it (see [`WorkloadParts`]). Reads only the CRL files.
    pub fn compose(
        files: &FileMaterial,
        workload: &WorkloadParts<'_>,
    ) -> Result<Self, Vec<(Part, MaterialError)>> {
        let identity = workload.identity.or(files.identity.as_ref()).cloned();
        let mut domains = files.domains.clone();
        if let Some(bundles) = workload.bundles {
            for (td, b) in bundles {
                domains.insert(td.clone(), b.clone());
            }
        }
        let trust = ClientTrust::assemble(files.client_ca.clone(), domains)
            .map_err(|e| vec![(Part::Trust(trust::TrustSource::ClientCa), e)])?;
        let crls =
            Crls::load_with(&files.crl_paths, &trust, workload.trust_from_api).map_err(|errs| {
                errs.into_iter()
                    .map(|(i, e)| (Part::Crl(i), e))
                    .collect::<Vec<_>>()
            })?;
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(trust.digest);
        h.update(crls.digest);
        Ok(Self {
            identity,
            trust,
            crls,
            ocsp: files.ocsp.clone(),
            // The staple is of the file certificate: an SVID from the
            // Workload API names no OCSP responder (`check` refuses the
            // combination).
            stapling: workload
                .identity
                .is_none()
                .then(|| files.stapling.clone())
                .flatten(),
            trust_id: h.finalize().into(),
        })
    }
}

/// The per-handshake callbacks.
pub struct Handshake {
    pub material: Arc<ArcSwap<ServerMaterial>>,
}

/// The material a connection's session id context was set from, kept on
/// the connection so that its certificate is verified against that same
/// bundle even if a reload lands between ClientHello and verification.
static PINNED: LazyLock<Option<Index<Ssl, Arc<ServerMaterial>>>> =
    LazyLock::new(|| Ssl::new_ex_index().ok());

/// The ClientHello callback: bind this connection's session to the trust
/// in force now.
///
/// It has to run before OpenSSL decides on resumption, which it does while
/// it processes the ClientHello. Pingora's `certificate_callback` is too
/// late: it runs from OpenSSL's cert_cb, after that decision, and only in a
/// full handshake. With the context set here, OpenSSL declines a TLS 1.2
/// session id or ticket, or a TLS 1.3 ticket, whose session carries another
/// context and does a full handshake instead, and stamps the session this
/// handshake creates, so the ticket it issues, with this context. (A server
/// may always decline a ticket; RFC 8446 §4.6.1 recommends bounding how long
/// tickets extend the original authentication, given "the likelihood of
/// intervening revocation".)
///
/// Fails closed: a connection whose context could not be set would keep
/// the listener's fixed one, so its handshake is aborted instead.
fn bind_session_to_trust(
    ssl: &mut SslRef,
    material: &ArcSwap<ServerMaterial>,
) -> Result<ClientHelloResponse, openssl::error::ErrorStack> {
    let m = material.load_full();
    session_context::set(ssl, m.trust_id())?;
    let idx = (*PINNED).ok_or_else(openssl::error::ErrorStack::get)?;
    ssl.set_ex_data(idx, m);
    Ok(ClientHelloResponse::SUCCESS)
}

/// `SSL_set_session_id_context`, which the openssl crate binds only for an
/// `SSL_CTX`. The one `unsafe` of this module lives here.
mod session_context {
    #![allow(unsafe_code)]

    use std::os::raw::{c_int, c_uint};

    use foreign_types::ForeignTypeRef;
    use openssl::error::ErrorStack;
    use openssl::ssl::SslRef;
    use openssl_sys::SSL;

    extern "C" {
        fn SSL_set_session_id_context(ssl: *mut SSL, sid_ctx: *const u8, len: c_uint) -> c_int;
    }

    /// Set the session id context of one connection (at most 32 bytes,
    /// `SSL_MAX_SID_CTX_LENGTH`; OpenSSL refuses longer).
    pub fn set(ssl: &mut SslRef, sid_ctx: &[u8; 32]) -> Result<(), ErrorStack> {
        // SAFETY: `ssl` is a live connection we hold exclusively; OpenSSL
        // copies `len` bytes from `sid_ctx`, which points at 32 readable
        // bytes, and keeps no pointer to them.
        let rc = unsafe {
            SSL_set_session_id_context(ssl.as_ptr(), sid_ctx.as_ptr(), sid_ctx.len() as c_uint)
        };
        if rc == 1 {
            Ok(())
        } else {
            Err(ErrorStack::get())
        }
    }
}

#[async_trait]
impl TlsAccept for Handshake {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        // The material the ClientHello callback bound this session to; the
        // current one only if that callback did not run (it always does).
        let pinned = (*PINNED).and_then(|idx| ssl.ex_data(idx).cloned());
        let m = pinned.unwrap_or_else(|| self.material.load_full());
        let mut ok = true;
        match &m.identity {
            Some(identity) => {
                if let Some((leaf, rest)) = identity.chain.split_first() {
                    ok &= ext::ssl_use_certificate(ssl, leaf).is_ok();
                    for c in rest {
                        ok &= ext::ssl_add_chain_cert(ssl, c).is_ok();
                    }
                }
                ok &= ext::ssl_use_private_key(ssl, &identity.key).is_ok();
            }
            None => {
                // Only before the SPIFFE Workload API's first SVID: the
                // handshake fails for lack of a certificate (`/readyz` says
                // why); logged at debug, as each probe would repeat it.
                tracing::debug!("no server certificate yet (SPIFFE Workload API)");
                return;
            }
        }
        ok &= ext::ssl_set_verify_cert_store(ssl, &m.trust.store).is_ok();
        if !ok {
            // The handshake then fails for lack of a certificate: loud and safe.
            tracing::error!("could not install server certificate on a TLS handshake");
        }
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let refused = match ocsp_check(ssl) {
            Some((ocsp, leaf, issuer)) => match ocsp.check(&leaf, issuer).await {
                Outcome::Accept => None,
                Outcome::Refuse { label, reason } => {
                    crate::metrics::CLIENT_CERT_REFUSALS
                        .with_label_values(&[label])
                        .inc();
                    if ocsp.refusal_closes() {
                        tracing::warn!(%reason, "client certificate refused; connection closed");
                        return Some(Arc::new(RefusedConnection));
                    }
                    tracing::warn!(%reason, "client certificate refused: treated as none (client_auth: optional)");
                    Some(reason)
                }
            },
            None => None,
        };
        Some(Arc::new(describe_connection(ssl, refused.is_some())))
    }
}

/// The mark a connection whose client certificate was refused after the
/// handshake (OCSP on a cold cache, `client_auth: require`) carries in
/// place of its [`TlsFacts`]: the listener closes it before reading a
/// request ([`refused_after_handshake`]). Were that ever missed, the
/// connection would still have no verified peer.
pub struct RefusedConnection;

/// Whether `stream`'s handshake ended with its certificate refused.
pub fn refused_after_handshake(stream: &pingora::protocols::Stream) -> bool {
    stream
        .get_ssl_digest()
        .is_some_and(|d| d.extension.get::<RefusedConnection>().is_some())
}

/// What an OCSP check of this connection needs, if it needs one: the
/// checker, the leaf, and its issuer from the verified chain (`None` for a
/// resumed session). Taken before any `.await`, as owned values.
fn ocsp_check(ssl: &SslRef) -> Option<(Arc<ClientOcsp>, X509, Option<X509>)> {
    let material = (*PINNED).and_then(|idx| ssl.ex_data(idx).cloned())?;
    let ocsp = material.ocsp.clone()?;
    let leaf = ssl.peer_certificate()?;
    // A certificate a CRL revoked is already none (`describe_connection`).
    if material.crls.revoking(&leaf).is_some() {
        return None;
    }
    let issuer = ssl
        .verified_chain()
        .and_then(|chain| chain.get(1).map(|c| c.to_owned()));
    Some((ocsp, leaf, issuer))
}

/// What the TLS layer knows about a finished handshake; `refused`: its
/// certificate was refused after the handshake and counts as none.
fn describe_connection(ssl: &TlsRef, refused: bool) -> TlsFacts {
    let revoked = revoked_peer(ssl);
    if let Some(cn) = &revoked {
        crate::metrics::CLIENT_CERT_REFUSALS
            .with_label_values(&[trust::REVOKED])
            .inc();
        tracing::warn!(certificate = %cn, "revoked client certificate: treated as none (client_auth: optional)");
    }
    let peer = (revoked.is_none() && !refused)
        .then(|| ssl.peer_certificate())
        .flatten()
        .and_then(|c| c.to_der().ok())
        .and_then(|der| match PeerCertificate::from_der(&der) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                tracing::warn!(error = %e, "verified client certificate could not be described");
                None
            }
        });
    TlsFacts {
        memo: Default::default(),
        peer,
        ja4: crate::ja4::client_hello_ja4(ssl),
        sni: ssl.servername(NameType::HOST_NAME).map(str::to_owned),
        alpn: ssl
            .selected_alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    }
}

/// OpenSSL's verify callback: once the whole chain has verified (depth 0),
/// hold it to the trust domain of the leaf ([`ClientTrust::admits`]),
/// against the material this connection was pinned to. Fails closed when
/// that material cannot be found.
fn verify_peer(preverified: bool, ctx: &mut X509StoreContextRef, client_auth: ClientAuth) -> bool {
    if !preverified || ctx.error_depth() != 0 {
        return preverified;
    }
    let pinned = X509StoreContext::ssl_idx()
        .ok()
        .and_then(|idx| ctx.ex_data(idx))
        .and_then(|ssl| (*PINNED).and_then(|idx| ssl.ex_data(idx).cloned()));
    let Some(material) = pinned else {
        tracing::error!("client certificate refused: no TLS material pinned to the connection");
        return false;
    };
    let verdict = match ctx.chain() {
        Some(chain) => match (chain.get(0), chain.iter().last()) {
            (Some(leaf), Some(anchor)) => {
                material
                    .trust
                    .admits(leaf, anchor)
                    .map_err(|r| (r.label(), r.to_string()))
                    // Revoked: fails the handshake with `require`; with
                    // `optional` the connection goes on as one without a
                    // certificate (decided in `describe_connection`, which
                    // also sees resumed sessions).
                    .and_then(|()| match material.crls.revoked_in(chain.iter()) {
                        Some(cn) if client_auth == ClientAuth::Require => Err((
                            trust::REVOKED,
                            format!("certificate `{cn}` of the chain is revoked by a CRL"),
                        )),
                        _ => Ok(()),
                    })
                    // OCSP, from the cache only: this callback must not
                    // wait on the network (see `ocsp`).
                    .and_then(|()| {
                        let Some(ocsp) = &material.ocsp else {
                            return Ok(());
                        };
                        if let Some(issuer) = chain.get(1) {
                            ocsp.remember_issuer(issuer);
                        }
                        // With `optional` the check after the handshake
                        // decides (and counts) alone.
                        if client_auth != ClientAuth::Require {
                            return Ok(());
                        }
                        match ocsp.cached_refusal(leaf) {
                            Some(Outcome::Refuse { label, reason }) => Err((label, reason)),
                            _ => Ok(()),
                        }
                    })
            }
            _ => return false,
        },
        None => return false,
    };
    match verdict {
        Ok(()) => true,
        Err((label, reason)) => {
            crate::metrics::CLIENT_CERT_REFUSALS
                .with_label_values(&[label])
                .inc();
            tracing::warn!(%reason, "client certificate refused");
            ctx.set_error(X509VerifyResult::APPLICATION_VERIFICATION);
            false
        }
    }
}

/// With `client_auth: optional`, a revoked certificate counts as none.
fn revoked_peer(ssl: &SslRef) -> Option<String> {
    let material = (*PINNED).and_then(|idx| ssl.ex_data(idx).cloned())?;
    if material.crls.lists.is_empty() {
        return None;
    }
    match ssl.verified_chain() {
        Some(chain) => material.crls.revoked_in(chain.iter()),
        // A resumed session: its chain was verified under these same CRLs
        // (they are part of the session id context); the leaf is checked
        // on its own.
        None => {
            let leaf = ssl.peer_certificate()?;
            let cn = material
                .crls
                .revoking(&leaf)
                .map(|_| material::display_name(&leaf));
            cn
        }
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
    let material = handshake.material.clone();
    let mut tls = TlsSettings::with_callbacks(Box::new(handshake))?;
    let mode = match client_auth {
        ClientAuth::Require => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        ClientAuth::Optional => SslVerifyMode::PEER,
    };
    tls.set_verify_callback(mode, move |ok, ctx| verify_peer(ok, ctx, client_auth));
    tls.set_verify_depth(8);
    // Session resumption with client auth needs a session id context. This
    // fixed one is only the default: `bind_session_to_trust` replaces it on
    // every connection with the client trust digest (32 bytes, so a session
    // can never match this 6-byte value).
    tls.set_session_id_context(b"ztgate")
        .or_err(InternalError, "session id context")?;
    if PINNED.is_none() {
        return Error::e_explain(InternalError, "no ex_data index for the TLS material");
    }
    tls.set_client_hello_callback(move |ssl, _alert| bind_session_to_trust(ssl, &material));
    // OCSP stapling: the pinned material's staple, when it has one.
    tls.set_status_callback(|ssl| {
        let material = (*PINNED).and_then(|idx| ssl.ex_data(idx).cloned());
        stapling::staple(ssl, material.as_ref().and_then(|m| m.stapling.as_deref()))
    })
    .or_err(InternalError, "OCSP status callback")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use ztgate_testkit::pki::Ca;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ztgate-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn material(d: &Path, server: &Ca, ca_pem: &str) -> ServerMaterial {
        server.server().unwrap().write(d, "server").unwrap();
        std::fs::write(d.join("ca.pem"), ca_pem).unwrap();
        ServerMaterial::load(
            &d.join("server.pem"),
            &d.join("server-key.pem"),
            Some(&d.join("ca.pem")),
            &[],
            &[],
        )
        .map_err(|e| format!("{e:?}"))
        .unwrap()
    }

    #[test]
    fn trust_id_follows_the_client_cas_only() {
        let d = dir("trust-id");
        let (a, b) = (Ca::new("a.test").unwrap(), Ca::new("b.test").unwrap());
        let only_a = material(&d, &a, &a.cert_pem()).trust_id().to_owned();
        // The same anchors: another server certificate, other PEM text.
        let rotated = material(&d, &b, &format!("# comment\n{}\n", a.cert_pem()));
        assert_eq!(rotated.trust_id(), &only_a);
        // Other anchors: each change is another identity.
        let only_b = material(&d, &a, &b.cert_pem()).trust_id().to_owned();
        let both = material(&d, &a, &(a.cert_pem() + &b.cert_pem()))
            .trust_id()
            .to_owned();
        assert_ne!(only_a, only_b);
        assert_ne!(only_a, both);
        assert_ne!(only_b, both);
        let _ = std::fs::remove_dir_all(&d);
    }
}
