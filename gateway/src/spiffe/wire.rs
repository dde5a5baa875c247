//! The Workload API on the wire: its X.509 messages and one server-streaming
//! gRPC call over HTTP/2 on the agent's Unix socket.
//!
//! The messages are declared with `prost`'s derive from the standard
//! `workload.proto` (field numbers and names as there; the test kit
//! compiles the same definitions from `testkit/proto/workload.proto`, and a
//! test below checks that both encode alike). The call is made with the `h2`
//! crate Pingora already links, plus the 5-byte gRPC message prefix: no
//! `protoc` at build time and no tonic in the production binary (the
//! packaging check keeps tonic to the demo). The `spiffe` crate (0.19) was
//! the alternative: it brings tonic/prost 0.14 next to the 0.12/0.13 the
//! workspace uses, and rustls-based X.509 types where the listener needs
//! OpenSSL ones.

use std::collections::HashMap;
use std::path::Path;

use bytes::{Buf, Bytes, BytesMut};
use tokio::task::JoinHandle;

/// The metadata a Workload API server requires on every call; an agent
/// refuses a call without it (it shows the caller means to reach the
/// Workload API, not some other service on a guessed socket).
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// Larger messages are refused. A response carries every SVID of the
/// workload and every federated bundle: a few KiB each, so 16 MiB is
/// thousands of trust domains and still bounds a broken peer.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// `X509SVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    /// The workload's SVIDs; the first is its default identity.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// CRLs (DER). Not applied: ztgate's CRLs are `listener.tls.crl`.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    /// Foreign trust domains' bundles, keyed by the trust domain's SPIFFE
    /// ID; DER certificates concatenated.
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

/// `X509SVID`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509Svid {
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The chain, DER certificates concatenated, leaf first.
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    /// The leaf's key, PKCS#8 DER.
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    /// The bundle of the SVID's own trust domain, DER concatenated.
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    /// An operator's label; no security meaning.
    #[prost(string, tag = "5")]
    pub hint: String,
}

/// `X509BundlesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub crl: Vec<Vec<u8>>,
    /// Every bundle to trust, keyed by trust domain SPIFFE ID.
    #[prost(map = "string, bytes", tag = "2")]
    pub bundles: HashMap<String, Vec<u8>>,
}

/// The streaming call made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `FetchX509SVID`: the SVIDs with their bundles (listener identity).
    X509Svid,
    /// `FetchX509Bundles`: bundles only (client trust alone).
    X509Bundles,
}

impl Method {
    fn path(self) -> &'static str {
        match self {
            Method::X509Svid => "/SpiffeWorkloadAPI/FetchX509SVID",
            Method::X509Bundles => "/SpiffeWorkloadAPI/FetchX509Bundles",
        }
    }

    /// The `kind` label of `ztgate_workload_api_updates_total`.
    pub fn kind(self) -> &'static str {
        match self {
            Method::X509Svid => "x509_svid",
            Method::X509Bundles => "x509_bundles",
        }
    }
}

/// Why a stream could not be opened or went on no further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("cannot connect to {path}: {reason}")]
    Connect { path: String, reason: String },
    #[error("HTTP/2: {0}")]
    H2(String),
    #[error("the agent answered HTTP {0}")]
    HttpStatus(u16),
    #[error("the agent answered grpc-status {code}: {message}")]
    Status { code: String, message: String },
    #[error("the agent ended the stream")]
    Ended,
    #[error("malformed gRPC framing: {0}")]
    Framing(String),
}

impl WireError {
    /// The `reason` label of `ztgate_workload_api_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            WireError::Connect { .. } => "connect",
            WireError::Status { .. } | WireError::HttpStatus(_) => "refused",
            WireError::H2(_) | WireError::Ended => "stream",
            WireError::Framing(_) => "malformed",
        }
    }
}

/// An open server stream: its messages, one by one.
pub struct Stream {
    body: h2::RecvStream,
    buf: BytesMut,
    /// Drives the HTTP/2 connection; ended with the stream.
    driver: JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn h2_error(e: h2::Error) -> WireError {
    WireError::H2(e.to_string())
}

/// Text of a header for an error message, bounded (it comes from the peer).
fn header_text(v: Option<&http::HeaderValue>) -> String {
    v.map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(200)
            .collect()
    })
    .unwrap_or_default()
}

/// Open `method` on the agent at `socket`: a fresh connection each time,
/// so that a restarted agent is reached anew.
pub async fn open(socket: &Path, method: Method) -> Result<Stream, WireError> {
    open_with(socket, method, true).await
}

/// [`open`], with or without the security header (without: only to show
/// that an agent refuses such a call).
async fn open_with(socket: &Path, method: Method, header: bool) -> Result<Stream, WireError> {
    let io = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| WireError::Connect {
            path: socket.display().to_string(),
            reason: e.to_string(),
        })?;
    let (client, conn) = h2::client::handshake(io).await.map_err(h2_error)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let started = async {
        let mut client = client.ready().await.map_err(h2_error)?;
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://localhost{}", method.path()))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers");
        if header {
            req = req.header(SECURITY_HEADER, "true");
        }
        let req = req.body(()).map_err(|e| WireError::H2(e.to_string()))?;
        let (response, mut send) = client.send_request(req, false).map_err(h2_error)?;
        // The request message is empty: a zero-length, uncompressed frame.
        send.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .map_err(h2_error)?;
        let response = response.await.map_err(h2_error)?;
        if response.status() != http::StatusCode::OK {
            return Err(WireError::HttpStatus(response.status().as_u16()));
        }
        // Trailers-only: the call was refused (or ended) at once.
        if let Some(code) = response.headers().get("grpc-status") {
            return Err(WireError::Status {
                code: header_text(Some(code)),
                message: header_text(response.headers().get("grpc-message")),
            });
        }
        Ok(response.into_body())
    };
    match started.await {
        Ok(body) => Ok(Stream {
            body,
            buf: BytesMut::new(),
            driver,
        }),
        Err(e) => {
            driver.abort();
            Err(e)
        }
    }
}

impl Stream {
    /// The next message, or why there is none (the stream is then over).
    pub async fn next(&mut self) -> Result<Bytes, WireError> {
        loop {
            if let Some(msg) = take_message(&mut self.buf)? {
                return Ok(msg);
            }
            match self.body.data().await {
                Some(Ok(chunk)) => {
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => return Err(h2_error(e)),
                None => {
                    let trailers = self.body.trailers().await.map_err(h2_error)?;
                    let code = trailers.as_ref().and_then(|t| t.get("grpc-status"));
                    return Err(match code {
                        Some(c) if c.as_bytes() != b"0" => WireError::Status {
                            code: header_text(Some(c)),
                            message: header_text(
                                trailers.as_ref().and_then(|t| t.get("grpc-message")),
                            ),
                        },
                        _ => WireError::Ended,
                    });
                }
            }
        }
    }
}

/// One whole length-prefixed message from the front of `buf`, if there is
/// one yet.
fn take_message(buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    let Some(prefix) = buf.get(..5) else {
        return Ok(None);
    };
    let mut prefix = prefix;
    let compressed = prefix.get_u8();
    let len = usize::try_from(prefix.get_u32()).unwrap_or(usize::MAX);
    if compressed != 0 {
        // No grpc-accept-encoding was sent, so none may be used.
        return Err(WireError::Framing("compressed message".into()));
    }
    if len > MAX_MESSAGE {
        return Err(WireError::Framing(format!(
            "a message of {len} bytes (at most {MAX_MESSAGE})"
        )));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use ztgate_testkit::workload_api as kit;

    /// The hand-declared messages read what the test kit's generated code
    /// (from the .proto) writes, field by field.
    #[test]
    fn messages_match_the_standard_proto() {
        let kit_svid = kit::X509svid {
            spiffe_id: "spiffe://acme.test/gw".into(),
            x509_svid: vec![1, 2, 3],
            x509_svid_key: vec![4, 5],
            bundle: vec![6],
            hint: "internal".into(),
        };
        let sent = kit::X509svidResponse {
            svids: vec![kit_svid],
            crl: vec![vec![7]],
            federated_bundles: [("spiffe://partner.test".to_owned(), vec![8, 9])].into(),
        };
        let got = X509SvidResponse::decode(sent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(got.svids.len(), 1);
        let s = &got.svids[0];
        assert_eq!(s.spiffe_id, "spiffe://acme.test/gw");
        assert_eq!(
            (&s.x509_svid[..], &s.x509_svid_key[..], &s.bundle[..]),
            (&[1, 2, 3][..], &[4, 5][..], &[6][..])
        );
        assert_eq!(s.hint, "internal");
        assert_eq!(got.crl, vec![vec![7]]);
        assert_eq!(got.federated_bundles["spiffe://partner.test"], vec![8, 9]);

        let bundles = kit::bundles_of(&sent);
        let got = X509BundlesResponse::decode(bundles.encode_to_vec().as_slice()).unwrap();
        assert_eq!(got.bundles["spiffe://acme.test"], vec![6]);
        assert_eq!(got.bundles["spiffe://partner.test"], vec![8, 9]);
        assert_eq!(got.crl, vec![vec![7]]);
    }

    #[test]
    fn messages_are_taken_whole_and_bounded() {
        let mut buf = BytesMut::from(&[0, 0, 0, 0, 3, b'a', b'b'][..]);
        assert_eq!(take_message(&mut buf), Ok(None));
        buf.extend_from_slice(b"c\0\0\0\0\0");
        assert_eq!(take_message(&mut buf), Ok(Some(Bytes::from_static(b"abc"))));
        assert_eq!(take_message(&mut buf), Ok(Some(Bytes::new())));
        assert_eq!(take_message(&mut buf), Ok(None));
        let mut compressed = BytesMut::from(&[1, 0, 0, 0, 0][..]);
        assert!(take_message(&mut compressed).is_err());
        let mut huge = BytesMut::from(&[0, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            take_message(&mut huge),
            Err(WireError::Framing(m)) if m.contains("at most")
        ));
    }

    /// Against the test kit's agent on a real Unix socket: a call without
    /// the security header is refused (INVALID_ARGUMENT, as SPIRE does); with
    /// it, the stream sends the material as it changes, both streams carry
    /// it, and an agent going down ends the stream with UNAVAILABLE.
    #[tokio::test]
    async fn streams_from_a_real_agent() {
        use ztgate_testkit::pki::Ca;
        let dir = std::env::temp_dir().join(format!("ztgate-wire-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("agent.sock");
        let api = kit::WorkloadApi::start(&socket).await.unwrap();
        let refused = open_with(&socket, Method::X509Svid, false).await.err();
        assert!(
            matches!(&refused, Some(WireError::Status { code, .. }) if code == "3"),
            "{refused:?}"
        );
        assert_eq!(api.refused_calls(), 1);

        let ca = Ca::new("acme.test").unwrap();
        let id = "spiffe://acme.test/gw";
        let first = kit::update(vec![kit::svid(id, &ca.svid(id).unwrap(), &[&ca])], &[]);
        api.push(first.clone());
        let mut svids = open(&socket, Method::X509Svid).await.unwrap();
        let got = X509SvidResponse::decode(svids.next().await.unwrap()).unwrap();
        assert_eq!(got.svids[0].x509_svid, first.svids[0].x509_svid);
        let mut bundles = open(&socket, Method::X509Bundles).await.unwrap();
        let got = X509BundlesResponse::decode(bundles.next().await.unwrap()).unwrap();
        assert_eq!(got.bundles["spiffe://acme.test"], first.svids[0].bundle);

        let second = kit::update(vec![kit::svid(id, &ca.svid(id).unwrap(), &[&ca])], &[]);
        api.push(second.clone());
        let got = X509SvidResponse::decode(svids.next().await.unwrap()).unwrap();
        assert_eq!(got.svids[0].x509_svid, second.svids[0].x509_svid);

        api.stop().await;
        let ended = svids.next().await.err();
        assert!(
            matches!(&ended, Some(WireError::Status { code, .. }) if code == "14"),
            "{ended:?}"
        );
        let gone = open(&socket, Method::X509Svid).await.err();
        assert!(matches!(gone, Some(WireError::Connect { .. })), "{gone:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
