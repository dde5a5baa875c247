//! `proxy_protocol`: the gateway's PROXY protocol v1/v2 reader
//! (`gateway/src/proxy_protocol.rs`: `parse` and the async `read_header`
//! that drives it off the socket; see [`crate::gateway`] for how they get
//! here).
//!
//! The input is the start of a connection. Checked beyond "no panic":
//! - the module's contract for `parse`: any prefix of a header answers
//!   `Incomplete`; a whole header answers one stable `Complete` whatever
//!   follows; `Complete.len` fits the input and the caps (v1 ≤ 107 bytes,
//!   v2 ≤ 16 + 2048); an `Incomplete` with a known length asks for more
//!   bytes than are there;
//! - the reader over the same bytes, whether they arrive at once or a few
//!   at a time: it returns a header exactly when `parse` of the whole input
//!   does, the same one, and holds back under 107 bytes past it.

#[cfg(not(ztgate_proxy_protocol))]
compile_error!(
    "gateway/src/proxy_protocol.rs could not be cut at `// === the listener hook ===` \
     (see build.rs): update build.rs, or expose the parser from a library"
);

#[cfg(ztgate_proxy_protocol)]
pub use imp::{run, run_strict};

/// Findings reported to the lead and not yet fixed in
/// `gateway/src/proxy_protocol.rs`; inputs that only show them again are
/// not checked, so the fuzzer keeps looking for new ones. Set to `false`
/// once `parse_v1` is fixed (then `run_strict` = `run`); the inputs are
/// `fuzz/regressions/proxy_protocol-v1-*.bin`:
/// - `v1-bare-lf`: `PROXY UNKNOWN \n` (LF without CR) is a whole header
///   when the read ends right after the LF, and `Incomplete` when one more
///   byte came with it: acceptance depends on TCP segmentation, and §2.1
///   requires CRLF.
/// - `v1-utf8-split`: `PROXY UNKNOWN \u{399}\r\n` is accepted whole, but
///   refused when a read ends inside the two-byte character (ppp: "not
///   valid UTF-8"), so "any prefix of a valid header is Incomplete" fails;
///   §2.1 lines are US-ASCII.
/// - `v1-plus-port`: ppp reads ports with Rust's `u16::from_str`, which
///   takes a sign: `… 1 +443\r\n` is accepted (port 443), while a read
///   ending right after the `+` is refused.
///
/// One cause: `parse_v1` asks ppp about lines that have no CR yet, and ppp
/// refuses some prefixes of lines it accepts whole. While this is open,
/// v1 inputs skip the every-prefix check and the byte-at-a-time reader;
/// the other checks (caps, stability, the reader on one read) still run.
pub const SKIP_KNOWN_FINDINGS: bool = true;

#[cfg(ztgate_proxy_protocol)]
mod imp {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::io::{AsyncRead, ReadBuf};

    use crate::gateway::proxy_protocol::{
        parse, read_header, Header, Parsed, ReadError, MAX_HEADER_LEN, V1_MAX_LEN,
    };

    pub fn run(data: &[u8]) {
        let v1 = data.first() == Some(&b'P');
        check(data, !(super::SKIP_KNOWN_FINDINGS && v1));
    }

    /// Every check, known findings included.
    pub fn run_strict(data: &[u8]) {
        check(data, true);
    }

    fn check(data: &[u8], prefixes: bool) {
        let whole = parse(data);
        if let Ok(Parsed::Complete { header, len }) = &whole {
            check_complete(data, *header, *len, prefixes);
        }
        if let Ok(Parsed::Incomplete { exact_len }) = &whole {
            match exact_len {
                Some(n) => assert!(
                    *n > data.len(),
                    "Incomplete asks for {n} of {} bytes",
                    data.len()
                ),
                None => assert!(
                    data.len() < V1_MAX_LEN,
                    "v1 Incomplete past {V1_MAX_LEN} bytes"
                ),
            }
        }
        // The reader, with the bytes in one piece and in small pieces.
        let chunk = if data.len() <= 300 { 1 } else { 7 };
        let chunks: &[usize] = if prefixes {
            &[usize::MAX, chunk]
        } else {
            &[usize::MAX]
        };
        for &chunk in chunks {
            let got = read(data, chunk);
            match (&whole, &got) {
                (Ok(Parsed::Complete { header, len }), Ok((h, l, excess))) => {
                    assert_eq!((header, len), (h, l), "reader (chunks of {chunk}) vs parse");
                    assert!(
                        *excess < V1_MAX_LEN,
                        "reader held {excess} bytes past the header"
                    );
                    assert!(l + excess <= data.len());
                }
                (Ok(Parsed::Complete { .. }), Err(e)) => {
                    panic!("parse gives a header but the reader (chunks of {chunk}) fails: {e}")
                }
                (_, Ok((h, l, _))) => {
                    panic!("reader (chunks of {chunk}) gives {h:?} ({l} bytes) but parse of the whole input gives {whole:?}")
                }
                // Not `Closed` only: `parse` is not monotonic on v1 lines
                // that are already wrong. A line ending in a space is
                // "Incomplete" before its CR even when an earlier field is
                // bad (`PROXY TCP6 200~:db8::1 `), while a shorter prefix
                // without that space is refused; the reader, which parses
                // each prefix, then refuses it sooner. Bounded either way
                // (CR, 107 bytes or the timeout).
                (Ok(Parsed::Incomplete { .. }), Err(_)) | (Err(_), Err(_)) => {}
            }
        }
    }

    fn check_complete(data: &[u8], header: Header, len: usize, prefixes: bool) {
        assert!(
            len > 0 && len <= data.len(),
            "Complete len {len} of {} bytes",
            data.len()
        );
        assert!(len <= MAX_HEADER_LEN, "Complete len {len} over the cap");
        let v1 = data.first() == Some(&b'P');
        if v1 {
            assert!(len <= V1_MAX_LEN, "v1 header of {len} bytes");
        }
        // Stable whatever follows: the header alone gives the same answer.
        let alone = parse(data.get(..len).unwrap());
        assert_eq!(alone, Ok(Parsed::Complete { header, len }), "header alone");
        if !prefixes {
            return;
        }
        // Every prefix is Incomplete (all of them for short headers).
        let step = if len <= 256 { 1 } else { len / 64 };
        for k in (0..len).step_by(step.max(1)) {
            match parse(data.get(..k).unwrap()) {
                Ok(Parsed::Incomplete { .. }) => {}
                other => panic!("prefix {k} of a {len}-byte header: {other:?}"),
            }
        }
    }

    /// Bytes handed out `chunk` at a time, then end of stream.
    struct Chunks<'a> {
        data: &'a [u8],
        chunk: usize,
        read: usize,
    }

    impl AsyncRead for Chunks<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self.data.len().min(self.chunk).min(buf.remaining());
            let (head, tail) = self.data.split_at(n);
            buf.put_slice(head);
            self.data = tail;
            self.read += n;
            Poll::Ready(Ok(()))
        }
    }

    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
    }

    /// `read_header` over `data`: (header, header length, bytes read past it).
    fn read(data: &[u8], chunk: usize) -> Result<(Header, usize, usize), ReadError> {
        let mut io = Chunks {
            data,
            chunk,
            read: 0,
        };
        let mut buf = [0u8; MAX_HEADER_LEN];
        RT.with(|rt| {
            rt.block_on(async {
                let got = read_header(&mut io, &mut buf, Duration::from_secs(5)).await?;
                let header = got.header;
                let excess = got.excess.len();
                let len = io.read - excess;
                Ok((header, len, excess))
            })
        })
    }
}
