//! One `grpc.health.v1.Health/Check` call.
//!
//! Made through Pingora's own connector with the pool's [`HttpPeer`], so the
//! probe reaches the backend exactly as traffic does: h2c or h2 over TLS
//! with the same CA, SNI, client certificate and system roots (a separate
//! client stack could pass checks that real calls fail, or the reverse).
//! The two messages are declared here with `prost`'s derive, from
//! `grpc/health/v1/health.proto`: no `.proto` file, no `protoc` at build
//! time, and the production binary needs no generated gRPC client (tonic is
//! only in the demo). Only the 5-byte gRPC message prefix is written here.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use prost::Message;

const PATH: &[u8] = b"/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;
/// Larger answers are not a health response.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("request: {0}")]
    Io(String),
    #[error("backend did not negotiate HTTP/2")]
    NotH2,
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    #[error("grpc-status {0}")]
    GrpcStatus(String),
    #[error("malformed health response")]
    Malformed,
    #[error("serving status {0}")]
    NotServing(i32),
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckRequest {
    /// The service asked about; empty = the server as a whole.
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    /// `ServingStatus`, an enum on the wire as int32; kept as the number so
    /// that a value this build does not name is reported, not rejected.
    #[prost(int32, tag = "1")]
    status: i32,
}

/// Ask `peer` about `service` (empty = the server as a whole).
pub async fn check(
    connector: &Connector,
    peer: &HttpPeer,
    authority: &str,
    service: &str,
) -> Result<(), ProbeError> {
    let (session, _reused) = connector
        .get_http_session(peer)
        .await
        .map_err(|e| ProbeError::Connect(e.to_string()))?;
    let HttpSession::H2(mut h2) = session else {
        return Err(ProbeError::NotH2);
    };
    let io = |e: Box<pingora::Error>| ProbeError::Io(e.to_string());
    let mut req = RequestHeader::build("POST", PATH, Some(4)).map_err(io)?;
    for (k, v) in [
        ("host", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "ztgate-health"),
    ] {
        req.insert_header(k, v).map_err(io)?;
    }
    h2.write_request_header(Box::new(req), false).map_err(io)?;
    h2.write_request_body(encode_request(service), true)
        .await
        .map_err(io)?;
    h2.read_response_header().await.map_err(io)?;
    let resp = h2.response_header().ok_or(ProbeError::Malformed)?;
    if resp.status.as_u16() != 200 {
        return Err(ProbeError::HttpStatus(resp.status.as_u16()));
    }
    // Trailers-only answer (e.g. NOT_FOUND for an unknown service).
    if let Some(s) = resp.headers.get("grpc-status") {
        if s.as_bytes() != b"0" {
            return Err(ProbeError::GrpcStatus(
                String::from_utf8_lossy(s.as_bytes()).into_owned(),
            ));
        }
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = h2.read_response_body().await.map_err(io)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ProbeError::Malformed);
        }
        body.extend_from_slice(&chunk);
    }
    if let Some(t) = h2.read_trailers().await.map_err(io)? {
        match t.get("grpc-status") {
            Some(s) if s.as_bytes() == b"0" => {}
            Some(s) => {
                return Err(ProbeError::GrpcStatus(
                    String::from_utf8_lossy(s.as_bytes()).into_owned(),
                ))
            }
            None => return Err(ProbeError::Malformed),
        }
    }
    let status = decode_status(body.freeze())?;
    // Keep the connection for the next round.
    connector
        .release_http_session(HttpSession::H2(h2), peer, None)
        .await;
    if status == SERVING {
        Ok(())
    } else {
        Err(ProbeError::NotServing(status))
    }
}

/// A length-prefixed `HealthCheckRequest`.
fn encode_request(service: &str) -> Bytes {
    let msg = HealthCheckRequest {
        service: service.to_owned(),
    }
    .encode_to_vec();
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.put_u8(0); // not compressed
    out.put_u32(u32::try_from(msg.len()).unwrap_or(u32::MAX));
    out.put_slice(&msg);
    out.freeze()
}

/// `HealthCheckResponse.status` from one length-prefixed message; an absent
/// field is the proto3 default, UNKNOWN (0), and unknown fields are skipped.
fn decode_status(mut b: Bytes) -> Result<i32, ProbeError> {
    if b.remaining() < 5 {
        return Err(ProbeError::Malformed);
    }
    if b.get_u8() != 0 {
        return Err(ProbeError::Malformed); // compressed: we never asked for it
    }
    let len = b.get_u32() as usize;
    if b.remaining() < len {
        return Err(ProbeError::Malformed);
    }
    HealthCheckResponse::decode(b.split_to(len))
        .map(|m| m.status)
        .map_err(|_| ProbeError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_framing() {
        assert_eq!(encode_request("").as_ref(), &[0, 0, 0, 0, 0]);
        assert_eq!(
            encode_request("a.B").as_ref(),
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
    }

    #[test]
    fn response_decoding() {
        let ok = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]);
        assert_eq!(decode_status(ok).unwrap(), 1);
        let not_serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x02]);
        assert_eq!(decode_status(not_serving).unwrap(), 2);
        // Empty message = UNKNOWN; unknown fields are skipped.
        assert_eq!(
            decode_status(Bytes::from_static(&[0, 0, 0, 0, 0])).unwrap(),
            0
        );
        let extra = Bytes::from_static(&[0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 0x01]);
        assert_eq!(decode_status(extra).unwrap(), 1);
        for bad in [
            &[0u8, 0, 0][..],
            &[1, 0, 0, 0, 2, 0x08, 0x01],
            &[0, 0, 0, 0, 9, 0x08, 0x01],
            &[0, 0, 0, 0, 1, 0x08],
        ] {
            assert!(
                decode_status(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
