//! PROXY protocol v1/v2 on the client listener: which address a connection
//! from a trusted load balancer really comes from.
//!
//! Spec: HAProxy's "The PROXY protocol", versions 1 and 2
//! (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>): §2.1 the
//! human-readable v1 line, §2.2 the binary v2 header, §2.2.5 "a receiver
//! must reject" rules, §2.2 LOCAL vs PROXY commands.
//!
//! What it decides, per accepted connection and before TLS (Pingora's
//! [`PreTlsProcess`] hook):
//! - `listener.proxy_protocol` off, or the socket peer not in
//!   `listener.trusted_proxies` (read from the *current* runtime config, so a
//!   reload applies to the next connection): nothing is read; the bytes go
//!   straight to TLS. A PROXY header from an untrusted peer therefore just
//!   fails the TLS handshake — it can never set the client address (the
//!   spoofing this stops: any client naming any source address).
//! - A trusted peer MUST start with a v1 or v2 header, like HAProxy's
//!   `accept-proxy` or Envoy's `proxy_protocol` listener filter. The source
//!   address it carries replaces the socket peer in the connection's socket
//!   digest, which is what `Session::client_addr()` reads, so the client IP,
//!   GeoIP, the device fingerprint, rate limits and the audit log all see it.
//!   v2 `LOCAL` (the balancer's own health checks), v1 `UNKNOWN` and v2
//!   families without an IP (UNSPEC, UNIX) keep the socket address.
//! - Anything else — a wrong signature, a malformed or oversized header, a
//!   header not complete within [`HEADER_TIMEOUT`], a close before it — closes
//!   the connection, logged with the peer address. Never a hang, never a
//!   panic: every read is bounded in time and in bytes.
//!
//! Why the address goes into a new socket digest: Pingora's accept loop
//! fills the digest's `peer_addr` cell at accept (`l4::listener::accept`)
//! and reads it before the handshake (for its error log), so the cell can't
//! be set afterwards; but the stream is ours (`&mut`) until the handshake, no
//! one holds its digest yet, and `set_socket_digest` replaces it. The local
//! address stays the socket's (it is looked up lazily from the fd).
//!
//! Who parses what. The byte-level grammar — v1 fields, addresses and ports
//! (no leading zeros in ports, IPs as `std` parses them), v2 version,
//! command, family, address block and TLV framing — is the [`ppp`] crate's,
//! the widely used PROXY protocol parser, so we don't keep a parser of our
//! own. What is ours is the policy around it and the framing the reader
//! needs:
//! - caps: a v1 line ends with CRLF within 107 bytes ([`V1_MAX_LEN`]); a v2
//!   length field over [`MAX_V2_PAYLOAD`] is refused from the 16-byte fixed
//!   part alone, before anything more is read;
//! - exact framing: the v2 length comes from its fixed part and a v1 line
//!   ends at its first CR, so the reader takes exactly the header's bytes
//!   off an unbuffered stream (the listener has no L4 read buffer, to keep
//!   idle connections small) and puts back only what it read past a v1 line.
//!   Any prefix of a valid header answers "incomplete"; a v1 line ppp still
//!   calls partial once its CR is there is refused, so it can't wait for
//!   bytes that would never count;
//! - what a header means here: v2 `LOCAL` keeps the socket address whatever
//!   its family byte says (§2.2: the block is discarded, family included);
//!   PROXY takes only the families the spec defines for a stream (UNSPEC,
//!   TCP4, TCP6, UNIX stream), refuses datagram ones (a UDP flow is not
//!   this TCP client) and requires its TLVs to be well framed; v1 `UNKNOWN`,
//!   UNSPEC and UNIX keep the socket address.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::{ErrorSource, ErrorType};
use ppp::PartialResult;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::metrics;
use crate::state::Shared;

/// The v2 signature (§2.2): chosen so that no v1 line, HTTP request or TLS
/// record starts with it.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What every v1 line starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included (§2.1: "a receiver … 107 characters").
pub const V1_MAX_LEN: usize = 107;
/// The fixed part of a v2 header: signature, version/command, family,
/// length.
const V2_FIXED_LEN: usize = 16;
/// Cap on the v2 length field (address block + TLVs). The largest address
/// block is 216 bytes (two UNIX paths); real balancers add a few TLVs (AWS's
/// VPC endpoint id, Azure's link id, an SSL summary) of tens of bytes. 2 KiB
/// leaves room for those and bounds what an odd peer can make us hold.
pub const MAX_V2_PAYLOAD: usize = 2048;
/// The most bytes a header can take: the buffer the reader needs.
pub const MAX_HEADER_LEN: usize = V2_FIXED_LEN + MAX_V2_PAYLOAD;
/// How long a trusted peer has to send its whole header. Balancers send it
/// with (or right after) the connection; 5 s is generous for that and still
/// bounds what a stuck or slow peer holds (Pingora's own bound on the whole
/// handshake is 60 s).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The `PROXY` command: the original connection's endpoints.
    Proxy {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 `LOCAL` (the balancer's own connection, e.g. a health check), v1
    /// `UNKNOWN`, or a v2 family that carries no IP address: the socket's
    /// own addresses stand (§2.1, §2.2).
    Local,
}

/// The answer for the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a possible header. `exact_len` is the header's total
    /// length once it is known (v2 after its fixed part, and 16 before that),
    /// so a reader can stop exactly at its end; `None` while unknown (v1,
    /// whose end is its CRLF).
    Incomplete { exact_len: Option<usize> },
    /// A whole header of `len` bytes; what follows is the TLS ClientHello.
    Complete { header: Header, len: usize },
}

/// Why bytes are not an acceptable PROXY header. `V1` and `V2` carry the
/// `ppp` parser's own reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol signature (first byte {0:#04x})")]
    NoSignature(u8),
    #[error("v1 line has no CRLF within {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("v1 line has a byte that is not printable US-ASCII at offset {0}")]
    V1Byte(usize),
    #[error("malformed v1 line: {0}")]
    V1(String),
    #[error("malformed v1 line: it ends (CR at offset {0}) before its last field")]
    V1Truncated(usize),
    #[error("malformed v2 header: {0}")]
    V2(String),
    #[error("v2 family/transport byte {0:#04x} is not a defined one")]
    V2Family(u8),
    #[error("v2 family/transport byte {0:#04x} is a datagram transport on a stream listener")]
    V2Datagram(u8),
    #[error("v2 length {len} is over the {MAX_V2_PAYLOAD}-byte cap")]
    V2TooLong { len: usize },
}

/// Parse the start of a connection. Any prefix of a valid header gives
/// [`Parsed::Incomplete`]; the whole header gives one stable
/// [`Parsed::Complete`] whatever follows it.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let Some(&first) = buf.first() else {
        // Either version still possible.
        return Ok(Parsed::Incomplete { exact_len: None });
    };
    let no_signature = || ProxyHeaderError::NoSignature(first);
    // Which version is framing: the two signatures differ in their first
    // byte. Checking the signature here keeps garbage from being read on.
    if first == V2_SIGNATURE[0] {
        let sig = buf.get(..V2_SIGNATURE.len()).unwrap_or(buf);
        if !V2_SIGNATURE.starts_with(sig) {
            return Err(no_signature());
        }
        return parse_v2(buf);
    }
    let sig = buf.get(..V1_PREFIX.len()).unwrap_or(buf);
    if !V1_PREFIX.starts_with(sig) {
        return Err(no_signature());
    }
    parse_v1(buf)
}

// === v1 (§2.1) ===

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    // The line ends at its first CR; once the byte after it is there the
    // line is whole (a CR not followed by LF is ppp's to refuse).
    let cr = window.iter().position(|&b| b == b'\r');
    let text = window.get(..cr.unwrap_or(window.len())).unwrap_or(window);
    // §2.1: the line is US-ASCII. Anything else (a bare LF, NUL, a byte of
    // a UTF-8 character) is refused as soon as it arrives, so the answer
    // never depends on where a read ended.
    if let Some(at) = text.iter().position(|&b| !(b' '..=b'~').contains(&b)) {
        return Err(ProxyHeaderError::V1Byte(at));
    }
    let line = match cr {
        Some(cr) if cr + 1 < window.len() => window.get(..cr + 2).unwrap_or(window),
        _ if buf.len() >= V1_MAX_LEN => return Err(ProxyHeaderError::V1TooLong),
        // ppp is asked only about whole lines: it refuses some prefixes of
        // lines it accepts whole (an empty last port, a lone `+`).
        _ => return Ok(Parsed::Incomplete { exact_len: None }),
    };
    // Ports and addresses are digits, dots and hex (§2.1); ppp reads ports
    // with `u16::from_str`, which also takes a sign.
    if text.starts_with(b"PROXY TCP") && text.contains(&b'+') {
        return Err(ProxyHeaderError::V1(
            "a sign (`+`) is not part of an address or port".to_owned(),
        ));
    }
    match ppp::v1::Header::try_from(line) {
        Ok(h) => {
            let header = match h.addresses {
                ppp::v1::Addresses::Unknown => Header::Local,
                ppp::v1::Addresses::Tcp4(a) => Header::Proxy {
                    source: SocketAddr::new(a.source_address.into(), a.source_port),
                    destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
                },
                ppp::v1::Addresses::Tcp6(a) => Header::Proxy {
                    source: SocketAddr::new(a.source_address.into(), a.source_port),
                    destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
                },
            };
            Ok(Parsed::Complete {
                header,
                len: h.header.len(),
            })
        }
        Err(e) if e.is_incomplete() => Err(ProxyHeaderError::V1Truncated(text.len())),
        Err(e) => Err(ProxyHeaderError::V1(e.to_string())),
    }
}

// === v2 (§2.2) ===

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    // The fixed part gives the exact length: framing, ours.
    let (Some(&ver_cmd), Some(&family), Some(&hi), Some(&lo)) =
        (buf.get(12), buf.get(13), buf.get(14), buf.get(15))
    else {
        return Ok(Parsed::Incomplete {
            exact_len: Some(V2_FIXED_LEN),
        });
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = V2_FIXED_LEN + len;
    let header = buf.get(..total).unwrap_or(buf);
    // §2.2: with LOCAL the receiver discards the whole block, family
    // included, so a family byte ppp refuses does not matter then.
    let local = ver_cmd == 0x20;
    match ppp::v2::Header::try_from(header) {
        Err(e) if e.is_incomplete() || local => {
            if len > MAX_V2_PAYLOAD {
                return Err(ProxyHeaderError::V2TooLong { len });
            }
            if !e.is_incomplete() && buf.len() >= total {
                return Ok(Parsed::Complete {
                    header: Header::Local,
                    len: total,
                });
            }
            Ok(Parsed::Incomplete {
                exact_len: Some(total),
            })
        }
        Err(e) => Err(ProxyHeaderError::V2(e.to_string())),
        Ok(_) if len > MAX_V2_PAYLOAD => Err(ProxyHeaderError::V2TooLong { len }),
        Ok(h) => Ok(Parsed::Complete {
            header: v2_header(&h, family)?,
            len: h.len(),
        }),
    }
}

/// What a whole v2 header that ppp accepted means here.
fn v2_header(h: &ppp::v2::Header<'_>, family: u8) -> Result<Header, ProxyHeaderError> {
    use ppp::v2::{Addresses, Command, Protocol};
    if h.command == Command::Local {
        return Ok(Header::Local);
    }
    let header = match (&h.addresses, h.protocol) {
        (_, Protocol::Datagram) => return Err(ProxyHeaderError::V2Datagram(family)),
        (Addresses::Unspecified, Protocol::Unspecified) => Header::Local,
        (Addresses::Unix(_), Protocol::Stream) => Header::Local,
        (Addresses::IPv4(a), Protocol::Stream) => Header::Proxy {
            source: SocketAddr::new(a.source_address.into(), a.source_port),
            destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
        },
        (Addresses::IPv6(a), Protocol::Stream) => Header::Proxy {
            source: SocketAddr::new(a.source_address.into(), a.source_port),
            destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
        },
        // Combinations ppp models but the spec does not define (e.g. 0x10,
        // 0x01): §2.2 says to reject them.
        _ => return Err(ProxyHeaderError::V2Family(family)),
    };
    // TLVs are skipped, but their framing must hold.
    if let Some(Err(e)) = h.tlvs().find(|t| t.is_err()) {
        return Err(ProxyHeaderError::V2(e.to_string()));
    }
    Ok(header)
}

// === reading it off a connection ===

/// Why no header could be had from a connection.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("malformed PROXY header: {0}")]
    Malformed(#[from] ProxyHeaderError),
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed after {read} bytes, before a complete PROXY header")]
    Closed { read: usize },
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

impl ReadError {
    /// The `result` label of `ztgate_proxy_protocol_headers_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ReadError::Malformed(_) => "malformed",
            ReadError::Timeout(_) => "timeout",
            ReadError::Closed { .. } => "closed",
            ReadError::Io(_) => "io",
        }
    }
}

/// A header and what was read past it.
#[derive(Debug)]
pub struct Received<'b> {
    pub header: Header,
    /// The bytes after the header that came in the same read (a v1 line's
    /// end is found by looking, and the first read comes before the version
    /// is known): the start of the TLS ClientHello, to be put back on the
    /// stream.
    pub excess: &'b [u8],
}

/// Read one header off `io` within `limit`, into `buf` (at least
/// [`MAX_HEADER_LEN`] bytes). Reads stop at [`V1_MAX_LEN`] bytes until a v2
/// header's length is known, then at its exact end, so what is read past
/// the header is under 107 bytes and only ever from the first reads.
pub async fn read_header<'b, S>(
    io: &mut S,
    buf: &'b mut [u8],
    limit: Duration,
) -> Result<Received<'b>, ReadError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let (header, len, filled) = tokio::time::timeout(limit, fill(io, buf))
        .await
        .map_err(|_| ReadError::Timeout(limit))??;
    Ok(Received {
        header,
        excess: buf.get(len..filled).unwrap_or_default(),
    })
}

/// Read until `parse` gives an answer: `(header, header length, bytes read)`.
async fn fill<S>(io: &mut S, buf: &mut [u8]) -> Result<(Header, usize, usize), ReadError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let cap = buf.len().min(MAX_HEADER_LEN);
    let mut filled = 0usize;
    loop {
        let want = match parse(buf.get(..filled).unwrap_or_default())? {
            Parsed::Complete { header, len } => return Ok((header, len, filled)),
            Parsed::Incomplete { exact_len } => exact_len.unwrap_or(V1_MAX_LEN).min(cap),
        };
        let Some(room) = buf.get_mut(filled..want).filter(|r| !r.is_empty()) else {
            // Only reachable with a buffer under MAX_HEADER_LEN.
            return Err(ProxyHeaderError::V2TooLong { len: want }.into());
        };
        let n = io.read(room).await?;
        if n == 0 {
            return Err(ReadError::Closed { read: filled });
        }
        filled += n;
    }
}

// === the listener hook ===

/// Pingora's pre-TLS hook for the client listener; see the module docs.
/// Installed whatever the config says, so a reload can turn
/// `listener.proxy_protocol` on or off for the next connection.
pub struct AcceptProxyHeader {
    shared: Arc<Shared>,
}

impl AcceptProxyHeader {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Whether a connection from `peer` must start with a header now.
    fn expects_header(&self, peer: IpAddr) -> bool {
        let rt = self.shared.runtime.load();
        rt.proxy_protocol && rt.is_trusted_proxy(peer)
    }
}

#[async_trait]
impl PreTlsProcess for AcceptProxyHeader {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let Some(peer) = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
        else {
            return Ok(());
        };
        if !self.expects_header(peer.ip()) {
            return Ok(());
        }
        let mut buf = [0u8; MAX_HEADER_LEN];
        let received = match read_header(stream, &mut buf, HEADER_TIMEOUT).await {
            Ok(r) => r,
            Err(e) => {
                metrics::PROXY_PROTOCOL
                    .with_label_values(&[e.label()])
                    .inc();
                match &e {
                    // A trusted peer that speaks something else: the balancer
                    // is not configured to send PROXY, worth an operator's eye.
                    ReadError::Malformed(_) => {
                        tracing::warn!(%peer, error = %e, "PROXY protocol: closing connection")
                    }
                    // TCP health checks connect and close; slow peers time out.
                    _ => tracing::debug!(%peer, error = %e, "PROXY protocol: closing connection"),
                }
                return Err(pingora::Error::create(
                    ErrorType::Custom("ProxyProtocolError"),
                    ErrorSource::Downstream,
                    Some("PROXY protocol header".into()),
                    Some(Box::new(e)),
                ));
            }
        };
        stream.rewind(received.excess);
        let result = match received.header {
            Header::Proxy { .. } => "proxy",
            Header::Local => "local",
        };
        metrics::PROXY_PROTOCOL.with_label_values(&[result]).inc();
        if let Header::Proxy {
            source,
            destination,
        } = received.header
        {
            // A balancer on a dual-stack socket may report an IPv4 client
            // as TCP6 ::ffff:a.b.c.d: keep it IPv4, as GeoIP, rate limits
            // and the audit log would see it connecting directly.
            let source = SocketAddr::new(source.ip().to_canonical(), source.port());
            let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
            // A fresh cell: setting it cannot fail.
            let _ = digest.peer_addr.set(Some(source.into()));
            stream.set_socket_digest(digest);
            tracing::trace!(%peer, client = %source, %destination, "PROXY protocol: client address");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    const V1_TCP4: &[u8] = b"PROXY TCP4 81.2.69.142 10.0.0.1 51234 8443\r\n";
    const V1_TCP6: &[u8] = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
    const V1_UNKNOWN: &[u8] = b"PROXY UNKNOWN ffff:f...f:ffff 65535\r\n";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A v2 header: `ver_cmd`, `family`, then `payload` with its length.
    fn v2(ver_cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(ver_cmd);
        h.push(family);
        h.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn inet4_block(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = src.to_vec();
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p
    }

    fn v2_tcp4() -> Vec<u8> {
        v2(
            0x21,
            0x11,
            &inet4_block([89, 160, 20, 112], [10, 0, 0, 1], 40000, 8443),
        )
    }

    fn v2_tcp6() -> Vec<u8> {
        let mut p = Ipv6Addr::LOCALHOST.octets().to_vec();
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&2u16.to_be_bytes());
        v2(0x21, 0x21, &p)
    }

    /// TCP4 plus a NOOP TLV and an AWS-style VPC endpoint TLV.
    fn v2_tcp4_tlvs() -> Vec<u8> {
        let mut p = inet4_block([81, 2, 69, 142], [10, 0, 0, 1], 1, 2);
        p.extend_from_slice(&[0x04, 0x00, 0x02, 0, 0]);
        p.extend_from_slice(&[0xea, 0x00, 0x05, 0x01, b'v', b'p', b'c', b'e']);
        v2(0x21, 0x11, &p)
    }

    fn complete(buf: &[u8]) -> (Header, usize) {
        match parse(buf) {
            Ok(Parsed::Complete { header, len }) => (header, len),
            other => panic!("expected a complete header, got {other:?}"),
        }
    }

    fn proxy(source: &str, destination: &str) -> Header {
        Header::Proxy {
            source: sa(source),
            destination: sa(destination),
        }
    }

    #[test]
    fn valid_headers() {
        assert_eq!(
            complete(V1_TCP4),
            (proxy("81.2.69.142:51234", "10.0.0.1:8443"), V1_TCP4.len())
        );
        assert_eq!(
            complete(V1_TCP6),
            (
                proxy("[2001:db8::1]:1", "[2001:db8::2]:65535"),
                V1_TCP6.len()
            )
        );
        assert_eq!(complete(V1_UNKNOWN), (Header::Local, V1_UNKNOWN.len()));
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (Header::Local, 15));
        let h = v2_tcp4();
        assert_eq!(
            complete(&h),
            (proxy("89.160.20.112:40000", "10.0.0.1:8443"), 28)
        );
        let h = v2_tcp6();
        assert_eq!(complete(&h), (proxy("[::1]:1", "[2001:db8::2]:2"), 52));
        let h = v2_tcp4_tlvs();
        assert_eq!(
            complete(&h),
            (proxy("81.2.69.142:1", "10.0.0.1:2"), h.len())
        );
        // LOCAL: the block (even an odd family) is discarded.
        let h = v2(0x20, 0x11, &inet4_block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2));
        assert_eq!(complete(&h), (Header::Local, 28));
        assert_eq!(complete(&v2(0x20, 0x00, &[])), (Header::Local, 16));
        assert_eq!(complete(&v2(0x20, 0xff, &[])), (Header::Local, 16));
        // PROXY with UNSPEC or UNIX: no IP, the socket's address stands.
        assert_eq!(complete(&v2(0x21, 0x00, &[])), (Header::Local, 16));
        assert_eq!(complete(&v2(0x21, 0x31, &[0; 216])), (Header::Local, 232));
        // Ports at their bounds.
        assert_eq!(
            complete(b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n").0,
            proxy("1.2.3.4:0", "5.6.7.8:65535")
        );
    }

    /// What follows the header (the ClientHello) is not part of it, and
    /// does not change the answer.
    #[test]
    fn trailing_bytes_are_not_the_header() {
        let hello = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01];
        for h in [V1_TCP4.to_vec(), v2_tcp4(), v2_tcp4_tlvs()] {
            let mut buf = h.clone();
            buf.extend_from_slice(&hello);
            assert_eq!(complete(&buf), complete(&h));
            assert_eq!(complete(&buf).1, h.len());
        }
    }

    /// linkerd's every-prefix rule: every proper prefix of a valid header is
    /// "incomplete" (never an error, never a header), and v2's exact length
    /// never points past the real end.
    #[test]
    fn every_prefix_is_incomplete() {
        let headers: Vec<Vec<u8>> = vec![
            V1_TCP4.to_vec(),
            V1_TCP6.to_vec(),
            V1_UNKNOWN.to_vec(),
            v2_tcp4(),
            v2_tcp6(),
            v2_tcp4_tlvs(),
            v2(0x20, 0x00, &[]),
            v2(0x21, 0x31, &[7; 216]),
        ];
        for h in headers {
            for n in 0..h.len() {
                match parse(&h[..n]) {
                    Ok(Parsed::Incomplete { exact_len }) => {
                        if let Some(e) = exact_len {
                            assert!(e > n && e <= h.len(), "prefix {n} of {h:?}: {e}");
                        }
                    }
                    other => panic!("prefix {n} of {h:?}: {other:?}"),
                }
            }
            assert_eq!(complete(&h).1, h.len());
        }
    }

    /// The answer for a v1 line never depends on where a read ended
    /// (fuzzing, `fuzz/regressions/proxy_protocol-v1-*.bin`): a line is
    /// refused at the first byte that makes it wrong and at every longer
    /// prefix, or every proper prefix is Incomplete and the whole is one
    /// header.
    #[test]
    fn v1_answer_does_not_depend_on_the_split() {
        let cases: &[(&[u8], bool)] = &[
            // A bare LF (no CR) is not a line end.
            (b"PROXY UNKNOWN \n5", false),
            // A two-byte UTF-8 character: refused at its first byte.
            ("PROXY UNKNOWN \u{399}\r\n".as_bytes(), false),
            // A sign before a port: refused once the line is whole.
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +443\r\n", false),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 443\r\n", true),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 51234 \r\n", false),
        ];
        for &(line, valid) in cases {
            let shown = String::from_utf8_lossy(line);
            let mut refused_at = None;
            for n in 0..=line.len() {
                match (parse(&line[..n]), refused_at) {
                    (Err(_), _) => {
                        refused_at.get_or_insert(n);
                    }
                    (Ok(p), Some(at)) => panic!("{shown:?}: refused at {at}, then {p:?} at {n}"),
                    (Ok(Parsed::Complete { len, .. }), None) => {
                        assert!(
                            valid && n == line.len() && len == n,
                            "{shown:?}: Complete at {n}"
                        )
                    }
                    (Ok(Parsed::Incomplete { .. }), None) => {}
                }
            }
            assert_eq!(refused_at.is_none(), valid, "{shown:?}: {refused_at:?}");
        }
        assert_eq!(err(b"PROXY UNKNOWN \n"), ProxyHeaderError::V1Byte(14));
    }

    fn err(buf: &[u8]) -> ProxyHeaderError {
        match parse(buf) {
            Err(e) => e,
            Ok(p) => panic!("{:?} parsed as {p:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn wrong_signature() {
        // A TLS ClientHello straight away: a trusted peer not sending PROXY.
        assert_eq!(
            err(&[0x16, 0x03, 0x01]),
            ProxyHeaderError::NoSignature(0x16)
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n"),
            ProxyHeaderError::NoSignature(b'G')
        );
        assert_eq!(err(b"PROXX"), ProxyHeaderError::NoSignature(b'P'));
        assert_eq!(err(b"proxy TCP4"), ProxyHeaderError::NoSignature(b'p'));
        assert_eq!(err(b"PROXY\r\n"), ProxyHeaderError::NoSignature(b'P'));
        // A near-miss of the v2 signature.
        assert_eq!(
            err(b"\r\n\r\n\0\r\nQUIT\r"),
            ProxyHeaderError::NoSignature(b'\r')
        );
    }

    /// Malformed v1 lines: ppp refuses them (its reason in the message), or
    /// the line ended while ppp still wanted more.
    #[test]
    fn malformed_v1() {
        let lines: &[&[u8]] = &[
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n",
            b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n",
            // Bare LF, NUL, a CR not followed by LF, non-ASCII: not a line.
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4\0",
            b"PROXY TCP4\rX",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\u{e9}\r\n".as_bytes(),
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n",
        ];
        for line in lines {
            let e = err(line);
            assert!(
                matches!(
                    e,
                    ProxyHeaderError::V1(_)
                        | ProxyHeaderError::V1Truncated(_)
                        | ProxyHeaderError::V1Byte(_)
                ),
                "{:?}: {e:?}",
                String::from_utf8_lossy(line)
            );
        }
        // The message says why.
        assert_eq!(
            err(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n").to_string(),
            "malformed v1 line: Header contains invalid TCP port for the destination."
        );
        assert_eq!(err(b"PROXY TCP4\rX"), ProxyHeaderError::V1Truncated(10));
    }

    /// Where ppp's grammar differs from the hand-written parser it replaced.
    #[test]
    fn v1_differences_from_the_old_parser() {
        // A `+` before a port (Rust's integer parsing, which ppp uses,
        // allows it) is refused: §2.1 ports are digits only.
        assert!(matches!(
            err(b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"),
            ProxyHeaderError::V1(_)
        ));
        // UNKNOWN with more than four words after it: ppp keeps asking for
        // more; once the CRLF is there that is a refusal, never a wait.
        assert_eq!(
            err(b"PROXY UNKNOWN a b c d e\r\n"),
            ProxyHeaderError::V1Truncated(23)
        );
        assert_eq!(complete(b"PROXY UNKNOWN a b c d\r\n"), (Header::Local, 23));
    }

    #[test]
    fn v1_longer_than_107_bytes() {
        // 107 bytes, no CRLF: refused at the cap, not read further.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN, b'x');
        assert_eq!(err(&long), ProxyHeaderError::V1TooLong);
        long.extend_from_slice(b"\r\n");
        assert_eq!(err(&long), ProxyHeaderError::V1TooLong);
        // Exactly 107 with the CRLF is the largest allowed line.
        let mut max = b"PROXY UNKNOWN ".to_vec();
        max.resize(V1_MAX_LEN - 2, b'x');
        max.extend_from_slice(b"\r\n");
        assert_eq!(complete(&max), (Header::Local, V1_MAX_LEN));
        // The longest real line (two full IPv6 addresses) fits.
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY TCP6 {ip} {ip} 65535 65535\r\n");
        assert_eq!(line.len(), 104);
        assert!(matches!(complete(line.as_bytes()).0, Header::Proxy { .. }));
    }

    #[test]
    fn malformed_v2() {
        use ProxyHeaderError as E;
        let block = inet4_block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
        let ppp_refuses = |h: &[u8]| {
            let e = err(h);
            assert!(matches!(e, E::V2(_)), "{h:?}: {e:?}");
        };
        // Version, command, family, transport: ppp's.
        ppp_refuses(&v2(0x11, 0x11, &block));
        ppp_refuses(&v2(0x31, 0x11, &block));
        ppp_refuses(&v2(0x22, 0x11, &block));
        ppp_refuses(&v2(0x2f, 0x11, &block));
        ppp_refuses(&v2(0x21, 0x41, &block));
        ppp_refuses(&v2(0x21, 0x13, &block));
        // Ones ppp models but the spec leaves undefined: our policy.
        assert_eq!(err(&v2(0x21, 0x01, &block)), E::V2Family(0x01));
        assert_eq!(err(&v2(0x21, 0x10, &block)), E::V2Family(0x10));
        // Datagram transports: not this TCP client.
        assert_eq!(err(&v2(0x21, 0x12, &block)), E::V2Datagram(0x12));
        assert_eq!(err(&v2(0x21, 0x22, &[0; 36])), E::V2Datagram(0x22));
        assert_eq!(err(&v2(0x21, 0x32, &[0; 216])), E::V2Datagram(0x32));
        assert_eq!(err(&v2(0x21, 0x02, &[])), E::V2Datagram(0x02));
        // Address block shorter than the family needs.
        ppp_refuses(&v2(0x21, 0x11, &block[..11]));
        ppp_refuses(&v2(0x21, 0x21, &block));
        ppp_refuses(&v2(0x21, 0x31, &[0; 215]));
        // Errors show as soon as the fixed part is there.
        ppp_refuses(&v2(0x11, 0x11, &block)[..16]);
        ppp_refuses(&v2(0x21, 0x41, &block)[..16]);
        assert_eq!(
            err(&v2(0x21, 0x11, &block[..11])).to_string(),
            "malformed v2 header: Header length of 11 bytes cannot store the 12 bytes \
             required for the address family."
        );
    }

    #[test]
    fn v2_length_is_capped() {
        // The length field alone refuses it: nothing more is read.
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(err(&h), ProxyHeaderError::V2TooLong { len: 0xffff });
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x20, 0xff, 0xff, 0xff]);
        assert_eq!(err(&h), ProxyHeaderError::V2TooLong { len: 0xffff });
        let mut p = inet4_block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
        p.resize(MAX_V2_PAYLOAD + 1, 0);
        assert_eq!(
            err(&v2(0x21, 0x11, &p)[..16]),
            ProxyHeaderError::V2TooLong {
                len: MAX_V2_PAYLOAD + 1
            }
        );
        // Even whole, it is refused.
        assert_eq!(
            err(&v2(0x21, 0x11, &p)),
            ProxyHeaderError::V2TooLong {
                len: MAX_V2_PAYLOAD + 1
            }
        );
        // At the cap: fine, given well-formed TLVs (one NOOP filling it).
        let mut p = inet4_block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
        let fill = MAX_V2_PAYLOAD - p.len() - 3;
        p.extend_from_slice(&[0x04]);
        p.extend_from_slice(&u16::try_from(fill).unwrap().to_be_bytes());
        p.resize(MAX_V2_PAYLOAD, 0);
        assert_eq!(complete(&v2(0x21, 0x11, &p)).1, MAX_HEADER_LEN);
    }

    #[test]
    fn malformed_v2_tlvs() {
        let base = inet4_block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
        let with = |tlvs: &[u8]| {
            let mut p = base.clone();
            p.extend_from_slice(tlvs);
            v2(0x21, 0x11, &p)
        };
        let refused = |tlvs: &[u8]| {
            let e = err(&with(tlvs));
            assert!(matches!(e, ProxyHeaderError::V2(_)), "{tlvs:?}: {e:?}");
        };
        // A TLV header cut short.
        refused(&[0x04]);
        refused(&[0x04, 0x00]);
        // A value longer than what is left.
        refused(&[0x04, 0x00, 0x03, 0, 0]);
        // The second TLV is the broken one.
        refused(&[0x04, 0x00, 0x01, 0, 0xea, 0xff, 0xff]);
        // Empty TLVs are fine.
        assert!(matches!(
            complete(&with(&[0x04, 0x00, 0x00, 0x04, 0x00, 0x00])).0,
            Header::Proxy { .. }
        ));
        // ppp takes an UNSPEC payload as its (ignored) address block, not
        // TLVs; LOCAL discards its block. Either way the socket address
        // stands.
        assert_eq!(complete(&v2(0x21, 0x00, &[0x04])), (Header::Local, 17));
        assert_eq!(complete(&v2(0x20, 0x00, &[0x04])), (Header::Local, 17));
    }

    /// Arbitrary bytes never panic and always answer within the caps.
    #[test]
    fn no_panic_on_any_short_input() {
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for round in 0..20_000u32 {
            let len = (next() % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half the inputs start with a real signature, to get past it.
            match round % 4 {
                0 => buf.splice(0..0, V2_SIGNATURE).for_each(drop),
                1 => buf.splice(0..0, V1_PREFIX.iter().copied()).for_each(drop),
                _ => {}
            }
            if let Ok(Parsed::Complete { len, .. }) = parse(&buf) {
                assert!(len <= buf.len());
            }
        }
    }

    // --- the reader, over in-memory streams ---

    async fn read_all_at_once(input: &[u8]) -> Result<(Header, Vec<u8>), ReadError> {
        let mut io = input;
        let mut buf = [0u8; MAX_HEADER_LEN];
        let r = read_header(&mut io, &mut buf, Duration::from_secs(5)).await?;
        Ok((r.header, r.excess.to_vec()))
    }

    #[tokio::test]
    async fn reader_puts_back_what_follows_a_v1_line() {
        let mut input = V1_TCP4.to_vec();
        input.extend_from_slice(b"\x16\x03\x01hello");
        let (h, excess) = read_all_at_once(&input).await.unwrap();
        assert_eq!(h, proxy("81.2.69.142:51234", "10.0.0.1:8443"));
        assert_eq!(excess, b"\x16\x03\x01hello");
    }

    #[tokio::test]
    async fn reader_takes_exactly_a_v2_header() {
        // Once its length is known v2 is read exactly to its end; only the
        // first read, before the version is known, may take up to 107 bytes.
        let mut input = v2_tcp4_tlvs();
        let len = input.len();
        input.extend_from_slice(&[0x16; 300]);
        let mut io = &input[..];
        let mut buf = [0u8; MAX_HEADER_LEN];
        let r = read_header(&mut io, &mut buf, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.header, proxy("81.2.69.142:1", "10.0.0.1:2"));
        assert_eq!(r.excess.len() + len, V1_MAX_LEN);
        assert_eq!(io.len(), input.len() - V1_MAX_LEN);
    }

    #[tokio::test]
    async fn reader_across_many_small_reads() {
        // One byte per read, like a slow sender: same answers.
        for h in [V1_TCP6.to_vec(), v2_tcp6(), v2_tcp4_tlvs()] {
            let (mut tx, mut rx) = tokio::io::duplex(1);
            let input = h.clone();
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for b in input {
                    tx.write_all(&[b]).await.unwrap();
                }
            });
            let mut buf = [0u8; MAX_HEADER_LEN];
            let r = read_header(&mut rx, &mut buf, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(r.header, complete(&h).0);
            assert!(r.excess.is_empty());
            writer.await.unwrap();
        }
    }

    #[tokio::test]
    async fn reader_refuses_garbage_oversize_and_early_close() {
        assert!(matches!(
            read_all_at_once(b"\x16\x03\x01\x02\x00").await,
            Err(ReadError::Malformed(ProxyHeaderError::NoSignature(0x16)))
        ));
        let mut long = V1_PREFIX.to_vec();
        long.resize(500, b'1');
        assert!(matches!(
            read_all_at_once(&long).await,
            Err(ReadError::Malformed(ProxyHeaderError::V1TooLong))
        ));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(
            read_all_at_once(&huge).await,
            Err(ReadError::Malformed(ProxyHeaderError::V2TooLong { .. }))
        ));
        assert!(matches!(
            read_all_at_once(&V1_TCP4[..20]).await,
            Err(ReadError::Closed { read: 20 })
        ));
        assert!(matches!(
            read_all_at_once(b"").await,
            Err(ReadError::Closed { read: 0 })
        ));
    }

    #[tokio::test]
    async fn reader_gives_up_on_a_stalled_peer() {
        use tokio::io::AsyncWriteExt;
        let (mut tx, mut rx) = tokio::io::duplex(64);
        tx.write_all(&V1_TCP4[..10]).await.unwrap();
        let mut buf = [0u8; MAX_HEADER_LEN];
        let limit = Duration::from_millis(100);
        let started = std::time::Instant::now();
        let r = read_header(&mut rx, &mut buf, limit).await;
        assert!(
            matches!(r, Err(ReadError::Timeout(l)) if l == limit),
            "{r:?}"
        );
        assert!(started.elapsed() >= limit);
        drop(tx);
    }
}
