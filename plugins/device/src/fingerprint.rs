//! The device fingerprint: `base64url(HMAC-SHA256(secret, canonical))`.
//!
//! Keyed so that a client cannot compute the fingerprint of another device
//! from public signals, and so that a leaked fingerprint list says nothing
//! without the secret. The canonical encoding is what makes the value
//! stable:
//!
//! ```text
//! "ztgate-device-fp/v1" 0x00
//! then for each configured signal, in the fixed order of [`Signal`]:
//!   tag: u8 (the signal's id)   present: u8 (0 or 1)
//!   len: u32 big-endian         value: len bytes (absent: len 0)
//! ```
//!
//! The version tag lets the scheme change later without colliding with old
//! values; the tags and length prefixes make the encoding injective (no two
//! different signal sets give the same bytes, whatever their contents).
//! Header values are trimmed and runs of whitespace collapsed to one space;
//! header names are case-insensitive by construction (`http::HeaderMap`).
//! Repeated headers are joined with `, ` in arrival order (RFC 9110 §5.3).
//!
//! Rotation: a fingerprint is always *issued* with the current secret, and
//! a presented one (a token claim, a first-seen binding) is *accepted* under
//! the current or any previous secret. Comparisons are constant-time.

use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// At least 256 bits of key for HMAC-SHA256 (RFC 2104 §3: less than the
/// hash output length weakens the MAC).
pub const MIN_SECRET_LEN: usize = 32;

const VERSION_TAG: &[u8] = b"ztgate-device-fp/v1\0";

/// A signal that may go into the fingerprint. The declaration order is the
/// canonical order; the discriminant is the tag byte. Never reorder or
/// renumber: it would change every fingerprint (bump the version tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    Ja4 = 1,
    UserAgent = 2,
    SecChUa = 3,
    SecChUaPlatform = 4,
    SecChUaMobile = 5,
    CertThumbprint = 6,
    Country = 7,
    Asn = 8,
}

impl Signal {
    pub const ALL: [Signal; 8] = [
        Signal::Ja4,
        Signal::UserAgent,
        Signal::SecChUa,
        Signal::SecChUaPlatform,
        Signal::SecChUaMobile,
        Signal::CertThumbprint,
        Signal::Country,
        Signal::Asn,
    ];

    /// The name used in config (`signals:`).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Ja4 => "ja4",
            Signal::UserAgent => "user_agent",
            Signal::SecChUa => "sec_ch_ua",
            Signal::SecChUaPlatform => "sec_ch_ua_platform",
            Signal::SecChUaMobile => "sec_ch_ua_mobile",
            Signal::CertThumbprint => "cert_thumbprint",
            Signal::Country => "country",
            Signal::Asn => "asn",
        }
    }

    pub fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The request header this signal reads, if it is a header.
    fn header(self) -> Option<&'static str> {
        match self {
            Signal::UserAgent => Some("user-agent"),
            Signal::SecChUa => Some("sec-ch-ua"),
            Signal::SecChUaPlatform => Some("sec-ch-ua-platform"),
            Signal::SecChUaMobile => Some("sec-ch-ua-mobile"),
            _ => None,
        }
    }
}

/// Where signal values come from for one request.
#[derive(Debug, Clone, Copy)]
pub struct SignalSource<'a> {
    pub ja4: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// SHA-256 of the client certificate (DER).
    pub cert_thumbprint: Option<&'a [u8; 32]>,
    pub country: Option<&'a str>,
    pub asn: Option<u32>,
}

/// The canonical bytes of the configured signals for one request.
pub fn canonical(signals: &[Signal], src: &SignalSource<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(VERSION_TAG);
    let mut scratch = Vec::new();
    for s in signals {
        scratch.clear();
        let present = match s {
            Signal::Ja4 => src.ja4.map(|v| scratch.extend_from_slice(v.as_bytes())),
            Signal::CertThumbprint => src.cert_thumbprint.map(|v| scratch.extend_from_slice(v)),
            Signal::Country => src.country.map(|v| scratch.extend_from_slice(v.as_bytes())),
            Signal::Asn => src.asn.map(|v| scratch.extend_from_slice(&v.to_be_bytes())),
            Signal::UserAgent
            | Signal::SecChUa
            | Signal::SecChUaPlatform
            | Signal::SecChUaMobile => {
                header_value(src.headers, s.header().unwrap_or_default(), &mut scratch)
            }
        }
        .is_some();
        out.push(*s as u8);
        out.push(u8::from(present));
        let len = u32::try_from(scratch.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(scratch.get(..len as usize).unwrap_or_default());
    }
    out
}

/// All values of a header, whitespace-normalised, joined with `, `.
/// `None` when the header is absent.
fn header_value(headers: &HeaderMap, name: &str, out: &mut Vec<u8>) -> Option<()> {
    let mut any = false;
    for v in headers.get_all(name) {
        if any {
            out.extend_from_slice(b", ");
        }
        any = true;
        push_collapsed(v.as_bytes(), out);
    }
    any.then_some(())
}

/// Trim and collapse runs of ASCII whitespace to a single space.
fn push_collapsed(v: &[u8], out: &mut Vec<u8>) {
    let mut pending_space = false;
    let mut started = false;
    for &b in v {
        if b.is_ascii_whitespace() {
            pending_space = started;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
            started = true;
        }
    }
}

/// A secret from config. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// Names the secret by position, never by value.
    #[error("secret {which} is {len} bytes; at least {MIN_SECRET_LEN} are required")]
    SecretTooShort { which: String, len: usize },
}

/// Computes and checks fingerprints under the current and previous secrets.
#[derive(Clone)]
pub struct Fingerprinter {
    /// HMAC state with the key already absorbed; cloned per request so the
    /// key schedule is not redone each time.
    current: Hmac<Sha256>,
    previous: Vec<Hmac<Sha256>>,
    /// Unique per fingerprinter made in this process: what a remembered
    /// fingerprint is keyed by besides its signals, so one derived under
    /// another secret (before a reload) is never served.
    id: u64,
}

/// The next [`Fingerprinter::id`].
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fingerprinter")
            .field("previous_secrets", &self.previous.len())
            .finish_non_exhaustive()
    }
}

impl Fingerprinter {
    /// Every secret must be at least [`MIN_SECRET_LEN`] bytes; every short
    /// one is reported.
    pub fn new(current: &Secret, previous: &[Secret]) -> Result<Self, Vec<FingerprintError>> {
        let mut errors = Vec::new();
        let mut key = |which: String, s: &Secret| {
            if s.len() < MIN_SECRET_LEN {
                errors.push(FingerprintError::SecretTooShort {
                    which,
                    len: s.len(),
                });
                return None;
            }
            // HMAC accepts keys of any length: this cannot fail.
            Hmac::<Sha256>::new_from_slice(s.bytes()).ok()
        };
        let cur = key("secret".to_owned(), current);
        let prev: Vec<_> = previous
            .iter()
            .enumerate()
            .filter_map(|(i, s)| key(format!("previous_secrets[{i}]"), s))
            .collect();
        match cur {
            Some(current) if errors.is_empty() => Ok(Self {
                current,
                previous: prev,
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            }),
            _ => Err(errors),
        }
    }

    /// Which fingerprinter this is (see the field).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The fingerprint under the current secret.
    pub fn fingerprint(&self, canonical: &[u8]) -> String {
        mac_b64(&self.current, canonical)
    }

    /// Fingerprints under the previous secrets, newest first.
    pub fn previous_fingerprints(&self, canonical: &[u8]) -> Vec<String> {
        self.previous
            .iter()
            .map(|k| mac_b64(k, canonical))
            .collect()
    }

    /// Whether `presented` equals the fingerprint of `canonical` under the
    /// current or a previous secret. Every candidate is compared in
    /// constant time.
    pub fn matches(&self, canonical: &[u8], presented: &str) -> bool {
        let mut ok = ct_eq_str(&self.fingerprint(canonical), presented);
        for k in &self.previous {
            ok |= ct_eq_str(&mac_b64(k, canonical), presented);
        }
        ok
    }
}

fn mac_b64(key: &Hmac<Sha256>, data: &[u8]) -> String {
    let mut m = key.clone();
    m.update(data);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// Constant-time equality of two strings (the length is not secret).
pub fn ct_eq_str(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const S1: &str = "0123456789abcdef0123456789abcdef-one";
    const S2: &str = "0123456789abcdef0123456789abcdef-two";
    const JA4: &str = "t13d1516h2_8daaf6152771_e5627efa2ab1";
    const ALL: [Signal; 8] = Signal::ALL;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn fp(f: &Fingerprinter, ja4: Option<&str>, h: &HeaderMap) -> String {
        f.fingerprint(&canonical(
            &ALL,
            &SignalSource {
                ja4,
                headers: h,
                cert_thumbprint: Some(&[7; 32]),
                country: Some("SE"),
                asn: Some(1221),
            },
        ))
    }

    fn fper(secret: &str, prev: &[&str]) -> Fingerprinter {
        let prev: Vec<Secret> = prev.iter().map(|s| Secret::new(*s)).collect();
        Fingerprinter::new(&Secret::new(secret), &prev).unwrap()
    }

    #[test]
    fn stable_across_header_name_case_and_whitespace() {
        let f = fper(S1, &[]);
        let a = headers(&[
            ("user-agent", "Mozilla/5.0 (X11; Linux)  Gecko"),
            ("sec-ch-ua", "\"Chromium\";v=\"130\""),
            ("sec-ch-ua-mobile", "?0"),
        ]);
        let b = headers(&[
            ("User-Agent", "  Mozilla/5.0\t(X11;   Linux) Gecko "),
            ("SEC-CH-UA", "\"Chromium\";v=\"130\"   "),
            ("Sec-CH-UA-Mobile", " ?0"),
        ]);
        let x = fp(&f, Some(JA4), &a);
        assert_eq!(x, fp(&f, Some(JA4), &b));
        assert_eq!(x.len(), 43, "base64url of 32 bytes, unpadded");
        assert!(!x.contains('=') && !x.contains('+') && !x.contains('/'));
    }

    #[test]
    fn sensitive_to_every_signal() {
        let f = fper(S1, &[]);
        let h = headers(&[("user-agent", "curl/8")]);
        let base = fp(&f, Some(JA4), &h);
        assert_ne!(
            base,
            fp(&f, Some("t13d1517h2_8daaf6152771_e5627efa2ab1"), &h)
        );
        assert_ne!(base, fp(&f, None, &h));
        assert_ne!(
            base,
            fp(&f, Some(JA4), &headers(&[("user-agent", "curl/9")]))
        );
        assert_ne!(base, fp(&f, Some(JA4), &HeaderMap::new()));
        // An empty header is not an absent header.
        assert_ne!(
            fp(&f, Some(JA4), &headers(&[("user-agent", "")])),
            fp(&f, Some(JA4), &HeaderMap::new())
        );
        // Another secret, another fingerprint.
        assert_ne!(base, fp(&fper(S2, &[]), Some(JA4), &h));
    }

    #[test]
    fn encoding_is_injective_across_field_boundaries() {
        let h1 = headers(&[("sec-ch-ua", "ab"), ("sec-ch-ua-platform", "c")]);
        let h2 = headers(&[("sec-ch-ua", "a"), ("sec-ch-ua-platform", "bc")]);
        let src = |h| SignalSource {
            ja4: None,
            headers: h,
            cert_thumbprint: None,
            country: None,
            asn: None,
        };
        assert_ne!(canonical(&ALL, &src(&h1)), canonical(&ALL, &src(&h2)));
        // Choosing other signals changes the value even if all are absent.
        let empty = HeaderMap::new();
        assert_ne!(
            canonical(&[Signal::Ja4], &src(&empty)),
            canonical(&[Signal::UserAgent], &src(&empty))
        );
    }

    #[test]
    fn rotation_accepts_previous_secrets_only() {
        let old = fper(S1, &[]);
        let h = headers(&[("user-agent", "curl/8")]);
        let c = canonical(
            &ALL,
            &SignalSource {
                ja4: Some(JA4),
                headers: &h,
                cert_thumbprint: None,
                country: None,
                asn: None,
            },
        );
        let issued_before = old.fingerprint(&c);
        let rotated = fper(S2, &[S1]);
        assert!(rotated.matches(&c, &issued_before));
        assert!(rotated.matches(&c, &rotated.fingerprint(&c)));
        assert_eq!(
            rotated.previous_fingerprints(&c),
            vec![issued_before.clone()]
        );
        let dropped = fper(S2, &[]);
        assert!(!dropped.matches(&c, &issued_before));
        assert!(!rotated.matches(&c, ""));
    }

    #[test]
    fn short_secrets_are_refused_without_echoing_them() {
        let errs = Fingerprinter::new(
            &Secret::new("too-short-secret"),
            &[Secret::new(S1), Secret::new("x")],
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2);
        let text = format!("{errs:?} {}", errs[0]);
        assert!(!text.contains("too-short-secret"), "{text}");
        assert!(errs[1].to_string().contains("previous_secrets[1]"));
        assert_eq!(format!("{:?}", Secret::new(S1)), "<redacted>");
    }
}
