//! Opening one HTTP/2 connection to a target: TCP, then TLS with a client
//! certificate (rustls, ALPN `h2`) or h2c with prior knowledge, then the
//! HTTP/2 preface.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use h2::client::SendRequest;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// Errors while setting up or opening a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no usable PEM {what}")]
    Pem { path: String, what: &'static str },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP/2 handshake: {0}")]
    H2(#[from] h2::Error),
    #[error("the server did not pick ALPN h2")]
    NoH2,
}

/// TLS options from the command line.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: String,
    /// Offer session resumption (TLS 1.3 tickets / 1.2 session ids).
    pub resumption: bool,
}

/// Everything needed to open connections to one target; cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `:authority` of requests.
    pub authority: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// How the TLS handshake went (for the handshake-rate mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    Plain,
    Full,
    Resumed,
}

fn read(path: &Path) -> Result<Vec<u8>, ConnError> {
    std::fs::read(path).map_err(|source| ConnError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn pem_err(path: &Path, what: &'static str) -> ConnError {
    ConnError::Pem {
        path: path.display().to_string(),
        what,
    }
}

/// Build the rustls client configuration.
pub fn tls_config(o: &TlsOptions) -> Result<rustls::ClientConfig, ConnError> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = read(&o.ca)?;
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        let c = c.map_err(|_| pem_err(&o.ca, "certificate"))?;
        roots.add(c)?;
    }
    if roots.is_empty() {
        return Err(pem_err(&o.ca, "certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut cfg = match (&o.cert, &o.key) {
        (Some(cert), Some(key)) => {
            let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| pem_err(cert, "certificate"))?;
            let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
                .ok()
                .flatten()
                .ok_or_else(|| pem_err(key, "private key"))?;
            builder.with_client_auth_cert(certs, key_der)?
        }
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    if !o.resumption {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Ok(cfg)
}

impl Endpoint {
    /// An h2c endpoint.
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            authority: addr.to_string(),
            tls: None,
        }
    }

    /// A TLS endpoint.
    pub fn tls(addr: SocketAddr, o: &TlsOptions) -> Result<Self, ConnError> {
        let name = ServerName::try_from(o.server_name.clone())
            .map_err(|_| ConnError::ServerName(o.server_name.clone()))?;
        Ok(Self {
            addr,
            authority: format!("{}:{}", o.server_name, addr.port()),
            tls: Some((Arc::new(tls_config(o)?), name)),
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Open one connection; the HTTP/2 connection task is spawned on the
    /// current runtime and ends when every `SendRequest` clone is dropped.
    pub async fn connect(&self) -> Result<(SendRequest<Bytes>, Handshake), ConnError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let mut b = h2::client::Builder::new();
        // Large windows: flow control must never be what limits throughput.
        b.initial_window_size(1 << 20)
            .initial_connection_window_size(8 << 20);
        match &self.tls {
            None => {
                let (send, conn) = b.handshake(tcp).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok((send, Handshake::Plain))
            }
            Some((cfg, name)) => {
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name.clone(), tcp)
                    .await?;
                let (_, c) = tls.get_ref();
                if c.alpn_protocol() != Some(b"h2") {
                    return Err(ConnError::NoH2);
                }
                let kind = match c.handshake_kind() {
                    Some(rustls::HandshakeKind::Resumed) => Handshake::Resumed,
                    _ => Handshake::Full,
                };
                let (send, conn) = b.handshake(tls).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok((send, kind))
            }
        }
    }
}
