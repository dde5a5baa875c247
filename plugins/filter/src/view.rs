//! The request as filters see it: borrowed, immutable, network-free.
//!
//! The proxy, `ztgate explain` and unit tests all build a `RequestView` the
//! same way, which is why the filters behave the same in all three.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, Method};

use crate::PeerCertificate;

/// What the TLS layer learned about the connection, once per connection.
#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    /// The verified client certificate, if the client sent one.
    pub peer: Option<Arc<PeerCertificate>>,
    /// JA4 of the ClientHello, computed once per connection by the TLS layer
    /// (`None` when the ClientHello could not be captured or parsed).
    pub ja4: Option<Arc<str>>,
    /// SNI the client asked for.
    pub sni: Option<String>,
    /// Negotiated ALPN protocol.
    pub alpn: Option<String>,
}

/// One request, as every filter sees it.
#[derive(Debug, Clone)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// `:path`, e.g. `/orders.v1.Orders/Get`.
    pub path: &'a str,
    /// `:authority` (or `host`), without any port stripping.
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub tls: &'a TlsFacts,
    /// The client IP after `trusted_proxies` handling.
    pub client_ip: Option<IpAddr>,
    /// The socket peer address (what `client_ip` was derived from).
    pub socket_ip: Option<IpAddr>,
    /// Request time; filters never read the clock themselves.
    pub now: SystemTime,
}

impl<'a> RequestView<'a> {
    /// The verified client certificate, if any.
    pub fn peer(&self) -> Option<&PeerCertificate> {
        self.tls.peer.as_deref()
    }

    /// A header as a string, if present and valid visible ASCII.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `content-type: application/grpc*`.
    pub fn is_grpc(&self) -> bool {
        self.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/grpc"))
    }

    /// The gRPC service and method from `/pkg.Service/Method`.
    pub fn grpc_method(&self) -> Option<(&'a str, &'a str)> {
        let rest = self.path.strip_prefix('/')?;
        let (svc, method) = rest.split_once('/')?;
        if svc.is_empty() || method.is_empty() || method.contains('/') {
            return None;
        }
        Some((svc, method))
    }
}
