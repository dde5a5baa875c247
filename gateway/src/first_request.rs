//! `listener.request_header_timeout`: a connection must deliver the headers
//! of its first request within this long of its TLS handshake, or it is
//! closed.
//!
//! Why here: Pingora bounds the TLS handshake (60 s, `services/listening.rs`)
//! but then awaits the HTTP/2 handshake — the client's preface — with no
//! timeout (`apps/mod.rs`, `process_new`), and after the preface only
//! `h2_idle_timeout` (minutes) applies. A client can so hold a socket, a TLS
//! session and h2 buffers per connection, indefinitely, for the price of a
//! handshake.
//!
//! How: the decrypted stream handed to Pingora's HTTP layer is wrapped in
//! [`FirstRequest`], which watches the bytes Pingora reads — without
//! buffering or changing them — until the first request's headers are
//! complete: for HTTP/2 the 24-byte preface and then frame headers up to the
//! end of the first header block (a HEADERS or CONTINUATION frame with
//! END_HEADERS, read to its end); for HTTP/1.1 (health probes, curl) the
//! blank line ending the first request head. Until then a read that would
//! wait past the deadline fails with `TimedOut`, which ends the connection
//! wherever Pingora is (the h2 handshake or the wait for the first stream).
//! After that the wrapper is a pass-through: one branch per read.
//!
//! Bytes that are not HTTP/2 (a wrong preface) are the HTTP layer's to
//! refuse; the deadline stays armed meanwhile, so nothing can stall it.

#![deny(clippy::indexing_slicing)]

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::tls::ssl::SslRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::metrics;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length (RFC 9113 §4.1).
const FRAME_HEADER_LEN: usize = 9;
/// Frame types that carry a header block (RFC 9113 §6.2, §6.10).
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
/// The flag that ends a header block.
const END_HEADERS: u8 = 0x4;

/// How far the first request has come, from the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Its headers are not complete yet.
    Waiting,
    /// The first request's headers are complete: stop watching.
    Complete,
    /// Not the protocol that was negotiated: the HTTP layer will refuse it;
    /// keep the deadline.
    Invalid,
}

/// Follows the first bytes of a connection to the end of its first
/// request's headers.
#[derive(Debug, Clone)]
pub enum Scanner {
    H2(H2State),
    /// HTTP/1.x: how many bytes of `\r\n\r\n` were matched last.
    H1 {
        matched: usize,
    },
    Done(Progress),
}

/// Where an HTTP/2 scan is.
#[derive(Debug, Clone)]
pub enum H2State {
    Preface {
        matched: usize,
    },
    FrameHeader {
        buf: [u8; FRAME_HEADER_LEN],
        have: usize,
    },
    Payload {
        left: usize,
        ends_block: bool,
    },
}

impl Scanner {
    pub fn h2() -> Self {
        Scanner::H2(H2State::Preface { matched: 0 })
    }

    pub fn h1() -> Self {
        Scanner::H1 { matched: 0 }
    }

    /// Feed the next bytes read; returns where the first request is.
    pub fn feed(&mut self, data: &[u8]) -> Progress {
        let p = match self {
            Scanner::Done(p) => return *p,
            Scanner::H1 { matched } => feed_h1(matched, data),
            Scanner::H2(state) => feed_h2(state, data),
        };
        if p != Progress::Waiting {
            *self = Scanner::Done(p);
        }
        p
    }
}

fn feed_h1(matched: &mut usize, data: &[u8]) -> Progress {
    const END: &[u8; 4] = b"\r\n\r\n";
    for &b in data {
        *matched = if END.get(*matched) == Some(&b) {
            *matched + 1
        } else if b == b'\r' {
            1
        } else {
            0
        };
        if *matched == END.len() {
            return Progress::Complete;
        }
    }
    Progress::Waiting
}

fn feed_h2(state: &mut H2State, mut data: &[u8]) -> Progress {
    while !data.is_empty() {
        match state {
            H2State::Preface { matched } => {
                let want = H2_PREFACE.get(*matched..).unwrap_or_default();
                let n = want.len().min(data.len());
                let (head, rest) = data.split_at(n);
                if want.get(..n) != Some(head) {
                    return Progress::Invalid;
                }
                *matched += n;
                data = rest;
                if *matched == H2_PREFACE.len() {
                    *state = H2State::FrameHeader {
                        buf: [0; FRAME_HEADER_LEN],
                        have: 0,
                    };
                }
            }
            H2State::FrameHeader { buf, have } => {
                let n = (FRAME_HEADER_LEN - *have).min(data.len());
                let (head, rest) = data.split_at(n);
                if let Some(dst) = buf.get_mut(*have..*have + n) {
                    dst.copy_from_slice(head);
                }
                *have += n;
                data = rest;
                if *have == FRAME_HEADER_LEN {
                    let [l0, l1, l2, kind, flags, ..] = *buf;
                    let left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                    let ends_block =
                        (kind == HEADERS || kind == CONTINUATION) && flags & END_HEADERS != 0;
                    if left == 0 && ends_block {
                        return Progress::Complete;
                    }
                    *state = if left == 0 {
                        H2State::FrameHeader {
                            buf: [0; FRAME_HEADER_LEN],
                            have: 0,
                        }
                    } else {
                        H2State::Payload { left, ends_block }
                    };
                }
            }
            H2State::Payload { left, ends_block } => {
                let n = (*left).min(data.len());
                *left -= n;
                data = data.get(n..).unwrap_or_default();
                if *left == 0 {
                    if *ends_block {
                        return Progress::Complete;
                    }
                    *state = H2State::FrameHeader {
                        buf: [0; FRAME_HEADER_LEN],
                        have: 0,
                    };
                }
            }
        }
    }
    Progress::Waiting
}

/// A client connection with a deadline on its first request's headers;
/// see the module docs. Everything but reads is passed straight through.
pub struct FirstRequest {
    inner: Stream,
    deadline: Deadline,
    scanner: Scanner,
    limit: Duration,
}

enum Deadline {
    Armed(Pin<Box<Sleep>>),
    /// The first request's headers are complete.
    Off,
    /// It passed: every read fails from now on (counted once).
    Expired,
}

impl FirstRequest {
    /// Wrap a connection whose TLS handshake just completed.
    pub fn new(inner: Stream, limit: Duration) -> Self {
        let scanner = match inner.selected_alpn_proto() {
            Some(ALPN::H2) => Scanner::h2(),
            _ => Scanner::h1(),
        };
        Self {
            inner,
            deadline: Deadline::Armed(Box::pin(tokio::time::sleep(limit))),
            scanner,
            limit,
        }
    }
}

impl fmt::Debug for FirstRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstRequest")
            .field("inner", &self.inner)
            .field("armed", &matches!(self.deadline, Deadline::Armed(_)))
            .finish()
    }
}

impl AsyncRead for FirstRequest {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let deadline = match &mut this.deadline {
            Deadline::Off => return Pin::new(&mut this.inner).poll_read(cx, buf),
            Deadline::Expired => return Poll::Ready(Err(timed_out())),
            Deadline::Armed(d) => d,
        };
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = buf.filled().get(before..).unwrap_or_default();
                if this.scanner.feed(new) == Progress::Complete {
                    this.deadline = Deadline::Off;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Nothing to read: the deadline decides (its timer wakes us).
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    this.deadline = Deadline::Expired;
                    metrics::REQUEST_HEADER_TIMEOUTS.inc();
                    let peer = this
                        .inner
                        .get_socket_digest()
                        .and_then(|d| d.peer_addr().cloned());
                    tracing::debug!(
                        peer = ?peer,
                        limit = ?this.limit,
                        "no request headers within listener.request_header_timeout: closing"
                    );
                    Poll::Ready(Err(timed_out()))
                }
            },
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no request headers within listener.request_header_timeout",
    )
}

impl AsyncWrite for FirstRequest {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for FirstRequest {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for FirstRequest {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for FirstRequest {
    fn get_ssl(&self) -> Option<&SslRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for FirstRequest {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for FirstRequest {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for FirstRequest {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for FirstRequest {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&[0, 0, 0, 1]);
        f.extend_from_slice(payload);
        f
    }

    /// What a gRPC client sends first: preface, SETTINGS, WINDOW_UPDATE,
    /// then HEADERS with END_HEADERS, then DATA.
    fn grpc_start() -> (Vec<u8>, usize) {
        let mut b = H2_PREFACE.to_vec();
        b.extend(frame(0x4, 0, &[0, 3, 0, 0, 0, 100]));
        b.extend(frame(0x8, 0, &[0, 0, 0xff, 0xff]));
        b.extend(frame(HEADERS, END_HEADERS, &[0x82; 40]));
        let end = b.len();
        b.extend(frame(0x0, 0x1, &[0; 5]));
        (b, end)
    }

    /// Complete exactly at the end of the first header block, whatever
    /// the read sizes.
    #[test]
    fn h2_completes_at_the_end_of_the_first_header_block() {
        let (bytes, end) = grpc_start();
        for chunk in [1, 2, 7, 9, 24, 100, bytes.len()] {
            let mut s = Scanner::h2();
            let mut seen = 0;
            let mut done_at = None;
            for c in bytes.chunks(chunk) {
                seen += c.len();
                if s.feed(c) == Progress::Complete {
                    done_at = Some(seen);
                    break;
                }
            }
            let done_at = done_at.unwrap_or_else(|| panic!("chunk {chunk}: never complete"));
            // It completes in the read that holds the block's last byte.
            assert!(
                done_at >= end && done_at < end + chunk,
                "chunk {chunk}: {done_at}"
            );
        }
    }

    /// The preface alone, settings, or a header block without its end are
    /// not a request.
    #[test]
    fn h2_without_a_whole_header_block_is_waiting() {
        let mut s = Scanner::h2();
        assert_eq!(s.feed(H2_PREFACE), Progress::Waiting);
        assert_eq!(s.feed(&frame(0x4, 0, &[])), Progress::Waiting);
        assert_eq!(s.feed(&frame(0x6, 0, &[0; 8])), Progress::Waiting);
        // HEADERS without END_HEADERS, then CONTINUATION with it.
        assert_eq!(s.feed(&frame(HEADERS, 0x1, &[0x82; 10])), Progress::Waiting);
        let cont = frame(CONTINUATION, END_HEADERS, &[0x84; 3]);
        let (head, tail) = cont.split_at(cont.len() - 1);
        assert_eq!(s.feed(head), Progress::Waiting);
        assert_eq!(s.feed(tail), Progress::Complete);
        // Once complete, it stays so.
        assert_eq!(s.feed(b"anything"), Progress::Complete);
        // An empty HEADERS frame with END_HEADERS ends a block too.
        let mut s = Scanner::h2();
        let mut b = H2_PREFACE.to_vec();
        b.extend(frame(HEADERS, END_HEADERS, &[]));
        assert_eq!(s.feed(&b), Progress::Complete);
    }

    #[test]
    fn h2_wrong_preface_is_invalid() {
        let mut s = Scanner::h2();
        assert_eq!(s.feed(b"PRI * HTTP/2.0\r\n"), Progress::Waiting);
        assert_eq!(s.feed(b"\r\nXX"), Progress::Invalid);
        assert_eq!(Scanner::h2().feed(b"GET / HTTP/1.1\r\n"), Progress::Invalid);
    }

    #[test]
    fn h1_completes_at_the_blank_line() {
        let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        for chunk in [1, 3, req.len()] {
            let mut s = Scanner::h1();
            let mut out = Progress::Waiting;
            for c in req.chunks(chunk) {
                out = s.feed(c);
            }
            assert_eq!(out, Progress::Complete, "chunk {chunk}");
        }
        let mut s = Scanner::h1();
        assert_eq!(s.feed(b"GET / HTTP/1.1\r\nA: b\r\n\r"), Progress::Waiting);
        assert_eq!(s.feed(b"\r\n\r"), Progress::Waiting);
        assert_eq!(s.feed(b"\n"), Progress::Complete);
    }

    /// Any bytes: no panic, and huge frame lengths are only counted down.
    #[test]
    fn arbitrary_input_never_panics() {
        let mut x: u32 = 0x9e37_79b9;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for round in 0..5_000 {
            let len = (next() % 80) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                data.splice(0..0, H2_PREFACE.iter().copied());
            }
            let mut s = Scanner::h2();
            for c in data.chunks(1 + (next() % 7) as usize) {
                s.feed(c);
            }
            Scanner::h1().feed(&data);
        }
    }
}
