//! The request as filters see it: borrowed, immutable, network-free.
//!
//! The proxy and `ztgate explain` build a `RequestView` with one function,
//! [`RequestView::build`], from what arrived ([`Received`]): the fallback
//! from `:authority` to `host` and the client IP behind trusted proxies are
//! derived there and nowhere else, which is why the filters see the same
//! request in both. (Unit tests of a single filter may still write a view
//! out by hand.)

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, Method};

use crate::PeerCertificate;

/// What the TLS layer learned about the connection, once per connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// What filters derived from this connection, for its next requests.
    pub memo: ConnMemo,
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

/// Values a filter derived from a connection's facts, remembered for the
/// connection's next requests: every stream of an HTTP/2 connection shares
/// its [`TlsFacts`], and what depends only on them (and on request values
/// that rarely change on one connection) need not be derived per request.
///
/// Not a fact: a memo compares equal to any other and clones empty. Each
/// entry is kept with the exact key it was derived from and served only for
/// that key, so a changed input (or a reload that changed a secret) derives
/// anew.
#[derive(Default)]
pub struct ConnMemo {
    /// The device fingerprint, keyed by everything it was computed from.
    pub fingerprint: Remembered<Box<[u8]>, Arc<str>>,
    /// The `x-forwarded-client-cert` value of this connection's certificate,
    /// keyed by the SPIFFE ID it names (empty: none).
    pub xfcc: Remembered<Box<str>, http::HeaderValue>,
    /// The SPIFFE ID parsed from the certificate's one URI SAN, and its
    /// `x-ztgate-spiffe-id` header value, keyed by that URI SAN.
    pub svid: Remembered<Box<str>, (crate::SpiffeId, http::HeaderValue)>,
}

/// One derived value and the exact key it was derived from.
pub struct Remembered<K, V>(std::sync::Mutex<Option<(K, V)>>);

impl<K, V> Default for Remembered<K, V> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(None))
    }
}

impl<K, V: Clone> Remembered<K, V> {
    /// The value remembered for exactly `key`.
    pub fn get<Q: PartialEq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
    {
        let memo = self.0.lock().ok()?;
        memo.as_ref()
            .filter(|(k, _)| k.borrow() == key)
            .map(|(_, v)| v.clone())
    }

    /// Remember `value` as derived from `key` (replacing any other).
    pub fn remember(&self, key: K, value: V) {
        if let Ok(mut memo) = self.0.lock() {
            *memo = Some((key, value));
        }
    }
}

impl Clone for ConnMemo {
    fn clone(&self) -> Self {
        ConnMemo::default()
    }
}

impl PartialEq for ConnMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ConnMemo {}

impl std::fmt::Debug for ConnMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnMemo").finish_non_exhaustive()
    }
}

/// A request as it arrived, before anything is derived from it: what the
/// proxy reads off the wire and `ztgate explain` off its flags.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub method: &'a Method,
    /// `:path` without the query.
    pub path: &'a str,
    /// The request target's authority (HTTP/2 `:authority`, an HTTP/1
    /// absolute-form URI's), if it had one; `host` stands in when not.
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub tls: &'a TlsFacts,
    /// The socket peer (after a trusted PROXY protocol header, if any).
    pub socket_ip: Option<IpAddr>,
}

/// One request, as every filter sees it.
#[derive(Debug, Clone, PartialEq)]
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
    /// The one way the gateway builds a view, used by the proxy and by
    /// `ztgate explain` so that both show the filters the same request.
    /// `trusted_proxy` says whether a peer is in `trusted_proxies`; `now`
    /// is the request time every filter will use.
    pub fn build(
        received: Received<'a>,
        trusted_proxy: impl Fn(IpAddr) -> bool,
        now: SystemTime,
    ) -> Self {
        let Received {
            method,
            path,
            authority,
            headers,
            tls,
            socket_ip,
        } = received;
        let authority = authority.or_else(|| headers.get("host").and_then(|v| v.to_str().ok()));
        let xff = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        Self {
            method,
            path,
            authority,
            headers,
            tls,
            client_ip: client_ip(socket_ip, xff, trusted_proxy),
            socket_ip,
            now,
        }
    }

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

/// The client IP: the socket peer, unless the peer is a trusted proxy; then
/// the right-most `x-forwarded-for` address that is not itself trusted.
/// XFF from an untrusted peer is never believed.
pub fn client_ip<'a>(
    socket: Option<IpAddr>,
    xff: impl Iterator<Item = &'a str>,
    trusted: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    let peer = socket?;
    if !trusted(peer) {
        return Some(peer);
    }
    let hops: Vec<IpAddr> = xff
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = *hop;
        if !trusted(*hop) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn xff_only_from_trusted_peers() {
        let trusted = |a: IpAddr| a.to_string().starts_with("10.");
        // Untrusted peer: XFF ignored.
        assert_eq!(
            client_ip(Some(ip("1.2.3.4")), ["9.9.9.9"].into_iter(), trusted),
            Some(ip("1.2.3.4"))
        );
        // Trusted peer: right-most untrusted hop.
        assert_eq!(
            client_ip(
                Some(ip("10.0.0.1")),
                ["6.6.6.6, 7.7.7.7", "10.0.0.9"].into_iter(),
                trusted
            ),
            Some(ip("7.7.7.7"))
        );
        // Garbage entries are skipped; nothing usable: the peer.
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), ["junk"].into_iter(), trusted),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn build_falls_back_to_host_and_reads_xff_only_from_trusted_peers() {
        let mut headers = HeaderMap::new();
        headers.insert("host", http::HeaderValue::from_static("api.example.com"));
        headers.insert("x-forwarded-for", http::HeaderValue::from_static("7.7.7.7"));
        let tls = TlsFacts::default();
        let received = Received {
            method: &Method::POST,
            path: "/a.B/C",
            authority: None,
            headers: &headers,
            tls: &tls,
            socket_ip: Some(ip("10.0.0.1")),
        };
        let now = SystemTime::UNIX_EPOCH;
        let v = RequestView::build(received, |a| a == ip("10.0.0.1"), now);
        assert_eq!(v.authority, Some("api.example.com"));
        assert_eq!(v.client_ip, Some(ip("7.7.7.7")));
        assert_eq!(v.socket_ip, Some(ip("10.0.0.1")));
        let with_authority = Received {
            authority: Some("orders.local"),
            ..received
        };
        let v = RequestView::build(with_authority, |_| false, now);
        assert_eq!(v.authority, Some("orders.local"));
        assert_eq!(v.client_ip, Some(ip("10.0.0.1")));
    }
}
