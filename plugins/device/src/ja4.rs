//! JA4: the TLS client fingerprint of a ClientHello (FoxIO JA4 only; the
//! rest of the JA4+ family is under a non-commercial licence and is not
//! implemented here).
//!
//! Spec: FoxIO-LLC/ja4 `technical_details/JA4.md`. `ja4` is `a_b_c`:
//! `a` = transport, highest offered TLS version, SNI flag, cipher and
//! extension counts, first ALPN value; `b` = truncated SHA-256 of the sorted
//! cipher list; `c` = truncated SHA-256 of the sorted extension list (SNI
//! and ALPN removed) and the signature algorithms in wire order. GREASE
//! values (RFC 8701) are ignored everywhere so a client cannot vary its
//! fingerprint with them.
//!
//! The ClientHello comes from the network, before any authentication, so the
//! parser reads through a bounded [`Reader`]: every length is checked, every
//! read returns `Option`, and a truncated or garbage message is an error,
//! never a panic.
//!
//! Divergence kept on purpose: for a first ALPN value whose first or last
//! byte is not an ASCII letter or digit, we follow JA4.md (first and last
//! character of the hex form, e.g. `0xbaad` → `bd`), not the FoxIO reference
//! tools, which print `99` (FoxIO-LLC/ja4#178, maintainers side with the
//! spec). See `testdata/ja4/spec_divergences.json`.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Largest ClientHello handshake message, its 4-byte header included, that
/// is kept and parsed: 16 KiB, the most plaintext one TLS record carries
/// (RFC 8446 §5.1). Real ClientHellos are a few hundred bytes to ~2 KiB
/// (post-quantum key shares); the message arrives before any
/// authentication, so the cap bounds what a hostile peer can make us copy
/// and parse per handshake. The one cap: the gateway's capture
/// (`gateway/src/ja4.rs`) refuses larger messages with this constant.
pub const MAX_CLIENT_HELLO_LEN: usize = 16 * 1024;

/// Handshake type (1 byte) and body length (3 bytes).
const HANDSHAKE_HEADER_LEN: usize = 4;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// Why a ClientHello could not be turned into a JA4.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ja4Error {
    /// The bytes end before the message does: more data may complete it.
    #[error("incomplete ClientHello: {0}")]
    Incomplete(&'static str),
    /// The bytes are not a well-formed ClientHello.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    /// The message (header included, the length carried here) is larger
    /// than [`MAX_CLIENT_HELLO_LEN`].
    #[error("ClientHello of {0} bytes is over the {MAX_CLIENT_HELLO_LEN}-byte cap")]
    TooLarge(usize),
}

/// A bounded cursor over untrusted bytes (rustls `codec::Reader` style):
/// reads return `None` instead of running past the end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(
            (usize::from(*b.first()?) << 16)
                | (usize::from(*b.get(1)?) << 8)
                | usize::from(*b.get(2)?),
        )
    }

    /// A vector with a one-byte length prefix.
    fn vec_u8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length prefix.
    fn vec_u16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }
}

/// RFC 8701 GREASE values: `0x?a?a` with both bytes equal.
pub fn is_grease(v: u16) -> bool {
    (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// Split a byte list into big-endian `u16`s; odd lengths are malformed.
fn u16_list(bytes: &[u8], what: &'static str) -> Result<Vec<u16>, Ja4Error> {
    if !bytes.len().is_multiple_of(2) {
        return Err(Ja4Error::Malformed(what));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|c| match c {
            [a, b] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        })
        .collect())
}

/// The parts of a ClientHello that JA4 reads, GREASE already removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    legacy_version: u16,
    /// Cipher suites in wire order, GREASE removed.
    ciphers: Vec<u16>,
    /// Extension types in wire order, GREASE removed.
    extensions: Vec<u16>,
    sni: bool,
    /// The first ALPN protocol name, when the extension has one.
    alpn_first: Option<Vec<u8>>,
    /// `signature_algorithms` (0x000d) in wire order; GREASE kept, as in the
    /// FoxIO reference (only ciphers, extensions and versions are filtered).
    sig_algs: Vec<u16>,
    /// `supported_versions` (0x002b), GREASE removed.
    supported_versions: Vec<u16>,
}

impl ClientHello {
    /// Parse a ClientHello handshake message: type byte `0x01`, 24-bit
    /// length, then the body. The length must match the buffer exactly.
    pub fn parse(handshake_message: &[u8]) -> Result<ClientHello, Ja4Error> {
        let mut r = Reader::new(handshake_message);
        let typ = r.u8().ok_or(Ja4Error::Incomplete("handshake type"))?;
        if typ != HANDSHAKE_CLIENT_HELLO {
            return Err(Ja4Error::Malformed("not a ClientHello handshake message"));
        }
        let len = r.u24().ok_or(Ja4Error::Incomplete("handshake length"))?;
        let message_len = len.saturating_add(HANDSHAKE_HEADER_LEN);
        if message_len > MAX_CLIENT_HELLO_LEN {
            return Err(Ja4Error::TooLarge(message_len));
        }
        match r.remaining().cmp(&len) {
            std::cmp::Ordering::Less => return Err(Ja4Error::Incomplete("handshake body")),
            std::cmp::Ordering::Greater => {
                return Err(Ja4Error::Malformed("trailing bytes after the ClientHello"))
            }
            std::cmp::Ordering::Equal => {}
        }
        Self::parse_body(r.take(len).ok_or(Ja4Error::Incomplete("handshake body"))?)
    }

    fn parse_body(body: &[u8]) -> Result<ClientHello, Ja4Error> {
        let mut r = Reader::new(body);
        let legacy_version = r.u16().ok_or(Ja4Error::Malformed("legacy_version"))?;
        r.take(32).ok_or(Ja4Error::Malformed("random"))?;
        let session_id = r.vec_u8().ok_or(Ja4Error::Malformed("session id"))?;
        if session_id.len() > 32 {
            return Err(Ja4Error::Malformed("session id over 32 bytes"));
        }
        let ciphers = r.vec_u16().ok_or(Ja4Error::Malformed("cipher suites"))?;
        let ciphers = u16_list(ciphers, "cipher suites of odd length")?;
        if ciphers.is_empty() {
            return Err(Ja4Error::Malformed("no cipher suites"));
        }
        let compression = r
            .vec_u8()
            .ok_or(Ja4Error::Malformed("compression methods"))?;
        if compression.is_empty() {
            return Err(Ja4Error::Malformed("no compression methods"));
        }
        let mut hello = ClientHello {
            legacy_version,
            ciphers: ciphers.into_iter().filter(|c| !is_grease(*c)).collect(),
            extensions: Vec::new(),
            sni: false,
            alpn_first: None,
            sig_algs: Vec::new(),
            supported_versions: Vec::new(),
        };
        // A TLS 1.0-era hello may end here with no extensions at all.
        if r.is_empty() {
            return Ok(hello);
        }
        let exts = r.vec_u16().ok_or(Ja4Error::Malformed("extensions"))?;
        if !r.is_empty() {
            return Err(Ja4Error::Malformed("bytes after the extensions"));
        }
        let mut er = Reader::new(exts);
        let mut seen: Vec<u16> = Vec::new();
        while !er.is_empty() {
            let typ = er.u16().ok_or(Ja4Error::Malformed("extension type"))?;
            let data = er.vec_u16().ok_or(Ja4Error::Malformed("extension body"))?;
            // RFC 8446 §4.2: at most one extension of each type.
            if seen.contains(&typ) {
                return Err(Ja4Error::Malformed("duplicate extension"));
            }
            seen.push(typ);
            if is_grease(typ) {
                continue;
            }
            hello.extensions.push(typ);
            match typ {
                EXT_SERVER_NAME => hello.sni = true,
                EXT_ALPN => hello.alpn_first = parse_alpn(data)?,
                EXT_SIGNATURE_ALGORITHMS => hello.sig_algs = parse_sig_algs(data)?,
                EXT_SUPPORTED_VERSIONS => hello.supported_versions = parse_versions(data)?,
                _ => {}
            }
        }
        Ok(hello)
    }

    /// The JA4 fingerprint, e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1`.
    pub fn ja4(&self) -> String {
        let (a, b, c) = self.raw_parts();
        let mut out = String::with_capacity(36);
        out.push_str(&a);
        out.push('_');
        out.push_str(&truncated_sha256(&b));
        out.push('_');
        out.push_str(&truncated_sha256(&c));
        out
    }

    /// JA4_r: like [`ClientHello::ja4`] with `b` and `c` left unhashed.
    pub fn ja4_r(&self) -> String {
        let (a, b, c) = self.raw_parts();
        format!("{a}_{b}_{c}")
    }

    /// The three parts before hashing.
    fn raw_parts(&self) -> (String, String, String) {
        let mut a = String::with_capacity(10);
        a.push('t');
        a.push_str(self.version_code());
        a.push(if self.sni { 'd' } else { 'i' });
        let _ = write!(a, "{:02}", self.ciphers.len().min(99));
        let _ = write!(a, "{:02}", self.extensions.len().min(99));
        a.push_str(&self.alpn_code());

        let mut ciphers = self.ciphers.clone();
        ciphers.sort_unstable();
        let b = hex_list(&ciphers);

        let mut exts: Vec<u16> = self
            .extensions
            .iter()
            .copied()
            .filter(|e| *e != EXT_SERVER_NAME && *e != EXT_ALPN)
            .collect();
        exts.sort_unstable();
        let mut c = hex_list(&exts);
        if !self.sig_algs.is_empty() {
            c.push('_');
            c.push_str(&hex_list(&self.sig_algs));
        }
        (a, b, c)
    }

    /// The highest non-GREASE `supported_versions` value if the extension
    /// is there, else `legacy_version` (never the record-layer version).
    fn version_code(&self) -> &'static str {
        let v = self
            .supported_versions
            .iter()
            .copied()
            .max()
            .unwrap_or(self.legacy_version);
        match v {
            0x0304 => "13",
            0x0303 => "12",
            0x0302 => "11",
            0x0301 => "10",
            0x0300 => "s3",
            0x0002 => "s2",
            0xfeff => "d1",
            0xfefd => "d2",
            0xfefc => "d3",
            _ => "00",
        }
    }

    /// First and last character of the first ALPN value; the hex form's
    /// first and last character when either byte is not alphanumeric
    /// (JA4.md); `00` when there is none.
    fn alpn_code(&self) -> String {
        let Some(v) = self.alpn_first.as_deref() else {
            return "00".to_owned();
        };
        let (Some(first), Some(last)) = (v.first(), v.last()) else {
            return "00".to_owned();
        };
        if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
            let mut s = String::with_capacity(2);
            s.push(char::from(*first));
            s.push(char::from(*last));
            s
        } else {
            let mut s = String::with_capacity(2);
            s.push(hex_digit(first >> 4));
            s.push(hex_digit(last & 0x0f));
            s
        }
    }
}

/// The lowercase hex digit of the low nibble of `n`.
fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n & 0x0f), 16).unwrap_or('0')
}

/// ALPN extension body (RFC 7301 §3.1): a u16-prefixed list of u8-prefixed
/// names. Returns the first name (`None` for an empty list or empty name).
fn parse_alpn(body: &[u8]) -> Result<Option<Vec<u8>>, Ja4Error> {
    let mut r = Reader::new(body);
    let list = r.vec_u16().ok_or(Ja4Error::Malformed("ALPN list"))?;
    if !r.is_empty() {
        return Err(Ja4Error::Malformed("bytes after the ALPN list"));
    }
    let mut lr = Reader::new(list);
    let mut first = None;
    while !lr.is_empty() {
        let name = lr.vec_u8().ok_or(Ja4Error::Malformed("ALPN name"))?;
        if first.is_none() {
            first = Some(name);
        }
    }
    Ok(first.filter(|n| !n.is_empty()).map(<[u8]>::to_vec))
}

/// `signature_algorithms` body (RFC 8446 §4.2.3): u16-prefixed u16 list.
fn parse_sig_algs(body: &[u8]) -> Result<Vec<u16>, Ja4Error> {
    let mut r = Reader::new(body);
    let list = r
        .vec_u16()
        .ok_or(Ja4Error::Malformed("signature algorithms"))?;
    if !r.is_empty() {
        return Err(Ja4Error::Malformed("bytes after the signature algorithms"));
    }
    u16_list(list, "signature algorithms of odd length")
}

/// ClientHello `supported_versions` body (RFC 8446 §4.2.1): u8-prefixed
/// u16 list. GREASE removed.
fn parse_versions(body: &[u8]) -> Result<Vec<u16>, Ja4Error> {
    let mut r = Reader::new(body);
    let list = r
        .vec_u8()
        .ok_or(Ja4Error::Malformed("supported versions"))?;
    if !r.is_empty() {
        return Err(Ja4Error::Malformed("bytes after the supported versions"));
    }
    Ok(u16_list(list, "supported versions of odd length")?
        .into_iter()
        .filter(|v| !is_grease(*v))
        .collect())
}

/// 4-digit lowercase hex values joined with `,`.
fn hex_list(values: &[u16]) -> String {
    let mut s = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{v:04x}");
    }
    s
}

/// First 12 hex characters of SHA-256; `000000000000` for an empty input.
fn truncated_sha256(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".to_owned();
    }
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(12);
    for b in digest.iter().take(6) {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b & 0x0f));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    use ztgate_testkit::testdata;

    #[derive(Deserialize)]
    struct Vector {
        name: String,
        client_hello_hex: String,
        ja4: String,
        ja4_r: String,
    }

    fn vectors() -> Vec<Vector> {
        let text = std::fs::read_to_string(testdata().join("ja4/vectors.json")).unwrap();
        let v: Vec<Vector> = serde_json::from_str(&text).unwrap();
        assert!(
            v.len() >= 30,
            "expected at least 30 vectors, got {}",
            v.len()
        );
        v
    }

    #[test]
    fn every_vector_matches_from_handshake() {
        for v in vectors() {
            let msg = hex::decode(&v.client_hello_hex).unwrap();
            let ch = ClientHello::parse(&msg).unwrap_or_else(|e| panic!("{}: {e}", v.name));
            assert_eq!(ch.ja4_r(), v.ja4_r, "{}", v.name);
            assert_eq!(ch.ja4(), v.ja4, "{}", v.name);
        }
    }

    /// A ClientHello handshake message with an empty session id, null
    /// compression and the given extensions (type, body) in order.
    fn hello(legacy_version: u16, ciphers: &[u16], extensions: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = legacy_version.to_be_bytes().to_vec();
        body.extend_from_slice(&[0; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&u16::try_from(ciphers.len() * 2).unwrap().to_be_bytes());
        body.extend(ciphers.iter().flat_map(|c| c.to_be_bytes()));
        body.extend_from_slice(&[1, 0]); // compression: null
        let mut exts = Vec::new();
        for (typ, data) in extensions {
            exts.extend_from_slice(&typ.to_be_bytes());
            exts.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            exts.extend_from_slice(data);
        }
        body.extend_from_slice(&u16::try_from(exts.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        msg.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn spec_divergence_follows_the_spec() {
        #[derive(Deserialize)]
        struct Div {
            name: String,
            client_hello_hex: String,
            spec: Expected,
        }
        #[derive(Deserialize)]
        struct Expected {
            ja4: String,
            ja4_r: String,
        }
        let text = std::fs::read_to_string(testdata().join("ja4/spec_divergences.json")).unwrap();
        let divs: Vec<Div> = serde_json::from_str(&text).unwrap();
        assert!(!divs.is_empty());
        for d in divs {
            let msg = hex::decode(&d.client_hello_hex).unwrap();
            let ch = ClientHello::parse(&msg).unwrap();
            assert_eq!(ch.ja4_r(), d.spec.ja4_r, "{}", d.name);
            assert_eq!(ch.ja4(), d.spec.ja4, "{}", d.name);
        }
    }

    /// linkerd's habit: every strict prefix is an error (never a panic),
    /// the whole message parses.
    #[test]
    fn every_prefix_is_an_error_not_a_panic() {
        for v in vectors() {
            let msg = hex::decode(&v.client_hello_hex).unwrap();
            for n in 0..msg.len() {
                assert!(
                    ClientHello::parse(&msg[..n]).is_err(),
                    "{} prefix {n}",
                    v.name
                );
            }
        }
    }

    #[test]
    fn garbage_and_bit_flips_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0a4a_0a4a);
        for _ in 0..20_000 {
            let n = rng.gen_range(0..600);
            let buf: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let _ = ClientHello::parse(&buf);
        }
        // Mutate real hellos: lengths inside become lies.
        for v in vectors().iter().take(8) {
            let msg = hex::decode(&v.client_hello_hex).unwrap();
            for _ in 0..2_000 {
                let mut m = msg.clone();
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(0..m.len());
                    m[i] = rng.gen();
                }
                if let Ok(ch) = ClientHello::parse(&m) {
                    assert_eq!(ch.ja4().len(), 36);
                }
            }
        }
    }

    #[test]
    fn refuses_oversized_and_wrong_type() {
        assert!(matches!(
            ClientHello::parse(&[0x01, 0xff, 0xff, 0xff]),
            Err(Ja4Error::TooLarge(_))
        ));
        assert!(matches!(
            ClientHello::parse(&[0x02, 0, 0, 0]),
            Err(Ja4Error::Malformed(_))
        ));
    }

    #[test]
    fn single_character_alpn_is_doubled_per_spec() {
        let ch =
            ClientHello::parse(&hello(0x0303, &[0x1301], &[(0x0010, &[0, 2, 1, b'a'])])).unwrap();
        assert!(ch.ja4().starts_with("t12i0101aa_"), "{}", ch.ja4());
    }

    #[test]
    fn grease_and_counts() {
        assert!(is_grease(0x0a0a));
        assert!(is_grease(0xfafa));
        assert!(!is_grease(0x0a1a));
        assert!(!is_grease(0x1301));
        let ch = ClientHello::parse(&hello(
            0x0303,
            &[0x0a0a, 0x1301],
            &[
                (0x2a2a, &[]),
                (0x002b, &[4, 0x3a, 0x3a, 0x03, 0x04]),
                (0x0000, &[]),
            ],
        ))
        .unwrap();
        assert_eq!(ch.ja4_r(), "t13d010200_1301_002b");
    }
}
