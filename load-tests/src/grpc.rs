//! gRPC over HTTP/2 by hand: the 5-byte message framing, the request
//! headers, and reading `grpc-status` from headers or trailers
//! (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;

/// Which `orders.v1.Orders` method the load calls.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Unary `Get`.
    Get,
    /// Server-streaming `Watch` (`--stream-count` replies per call).
    Watch,
}

impl Method {
    pub fn path(self) -> &'static str {
        match self {
            Method::Get => "/orders.v1.Orders/Get",
            Method::Watch => "/orders.v1.Orders/Watch",
        }
    }
}

/// Prefix `msg` with the uncompressed-message header.
pub fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(u32::try_from(msg.len()).unwrap_or(u32::MAX));
    b.put_slice(msg);
    b.freeze()
}

/// Splits a byte stream of length-prefixed messages back into messages.
#[derive(Default, Debug)]
pub struct Deframer {
    buf: BytesMut,
}

/// A framing error (the peer sent something that is not gRPC).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("compressed message without a negotiated encoding")]
    Compressed,
    #[error("message of {0} bytes is over the {MAX_MESSAGE} byte limit")]
    TooLarge(usize),
}

/// Largest message accepted (16 MiB, as the testkit client).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

impl Deframer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(hdr) = self.buf.get(..5) else {
            return Ok(None);
        };
        if hdr.first().copied().unwrap_or(0) != 0 {
            return Err(FrameError::Compressed);
        }
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(hdr.get(1..5).unwrap_or(&[0; 4]));
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > MAX_MESSAGE {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The `grpc-status` in `h`, if present and numeric.
pub fn status_of(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// Canonical name of a gRPC status code, for the errors table.
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_then_deframe_round_trips_split_anywhere() {
        let a = frame(b"hello");
        let b = frame(&[7u8; 300]);
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        for cut in 0..all.len() {
            let mut d = Deframer::default();
            let mut got = Vec::new();
            d.push(&all[..cut]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
            d.push(&all[cut..]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(&got[0][..], b"hello");
            assert_eq!(got[1].len(), 300);
            assert!(d.is_empty());
        }
    }

    #[test]
    fn compressed_and_oversized_messages_are_errors() {
        let mut d = Deframer::default();
        d.push(&[1, 0, 0, 0, 1, 0]);
        assert_eq!(d.next_message(), Err(FrameError::Compressed));
        let mut d = Deframer::default();
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_message(), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn status_is_read_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(status_of(&h), None);
        h.insert("grpc-status", "16".parse().unwrap());
        assert_eq!(status_of(&h), Some(16));
        assert_eq!(code_name(16), "UNAUTHENTICATED");
    }
}
