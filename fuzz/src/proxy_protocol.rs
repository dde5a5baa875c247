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
pub use imp::run;

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
        let whole = parse(data);
        if let Ok(Parsed::Complete { header, len }) = &whole {
            check_complete(data, *header, *len);
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
        for chunk in [usize::MAX, chunk] {
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
                // The input ends inside a possible header: the peer
                // "closed". Anything else means some prefix was refused
                // that the whole input is not: the answer would depend on
                // how the bytes were split into reads.
                (Ok(Parsed::Incomplete { .. }), Err(ReadError::Closed { .. })) => {}
                (Ok(Parsed::Incomplete { .. }), Err(e)) => {
                    panic!("parse of the whole input is Incomplete but the reader (chunks of {chunk}) fails: {e}")
                }
                (Err(_), Err(_)) => {}
            }
        }
    }

    fn check_complete(data: &[u8], header: Header, len: usize) {
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
