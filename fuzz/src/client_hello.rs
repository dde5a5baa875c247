//! `client_hello`: the JA4 ClientHello parser of `ztgate-device`
//! (`ClientHello::parse` on the handshake message the gateway captures from
//! OpenSSL's ClientHello callback), then `.ja4()` and `.ja4_r()`.
//!
//! Checked for every input, beyond "no panic":
//! - every prefix (linkerd `client_hello.rs`): a proper prefix of a message
//!   that parses is `Incomplete`, never another hello or another error;
//! - the size cap: `TooLarge(n)` only for `n` over `MAX_CLIENT_HELLO_LEN`;
//! - the fingerprint's shape (`a_b_c`, 10 + 12 + 12 characters) and that
//!   `ja4`'s hashes are the hashes of `ja4_r`'s strings.

use sha2::{Digest, Sha256};
use ztgate_device::ja4::MAX_CLIENT_HELLO_LEN;
use ztgate_device::{ClientHello, Ja4Error};

pub fn run(data: &[u8]) {
    let message = ClientHello::parse(data);
    if let Ok(hello) = &message {
        check_fingerprint(hello);
        prefixes_are_incomplete(data, hello);
    }
    if let Err(Ja4Error::TooLarge(n)) = &message {
        assert!(*n > MAX_CLIENT_HELLO_LEN, "TooLarge({n}) is within the cap");
    }
}

fn prefixes_are_incomplete(message: &[u8], hello: &ClientHello) {
    // Every prefix for small inputs, 32 spread over the rest otherwise (a
    // parse is linear, so all prefixes of a 2 KiB hello is too slow per run).
    let n = message.len();
    let step = if n <= 512 { 1 } else { n / 32 };
    for k in (0..n).step_by(step.max(1)) {
        match ClientHello::parse(message.get(..k).unwrap()) {
            Err(Ja4Error::Incomplete(_)) => {}
            Ok(h) => assert_eq!(&h, hello, "prefix of {k} bytes gives another hello"),
            Err(e) => panic!("prefix of {k}/{n} bytes of a hello is not incomplete: {e}"),
        }
    }
}

/// First 12 hex characters of SHA-256, `000000000000` for "" (JA4.md).
fn truncated(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".to_owned();
    }
    Sha256::digest(s.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_fingerprint(hello: &ClientHello) {
    let ja4 = hello.ja4();
    let ja4_r = hello.ja4_r();
    let parts: Vec<&str> = ja4.split('_').collect();
    let [a, b, c] = parts.as_slice() else {
        panic!("ja4 {ja4:?} is not a_b_c");
    };
    assert_eq!(a.len(), 10, "ja4 a part {a:?}");
    assert!(a.is_ascii(), "ja4 a part {a:?}");
    assert!(a.starts_with('t'), "ja4 a part {a:?}");
    assert!(
        a.get(4..8)
            .is_some_and(|d| d.bytes().all(|x| x.is_ascii_digit())),
        "ja4 counts in {a:?}"
    );
    for h in [b, c] {
        assert!(
            h.len() == 12 && h.bytes().all(|x| matches!(x, b'0'..=b'9' | b'a'..=b'f')),
            "ja4 hash part {h:?}"
        );
    }
    // ja4_r = a_<ciphers>_<extensions>[_<sigalgs>]: the last two hashed.
    let mut raw = ja4_r.splitn(3, '_');
    let (ra, rb, rc) = (
        raw.next().unwrap(),
        raw.next().unwrap(),
        raw.next().unwrap(),
    );
    assert_eq!(ra, *a, "ja4_r {ja4_r:?} vs ja4 {ja4:?}");
    assert_eq!(truncated(rb), *b, "cipher hash of {ja4_r:?}");
    assert_eq!(truncated(rc), *c, "extension hash of {ja4_r:?}");
}
