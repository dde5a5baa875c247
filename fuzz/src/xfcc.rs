//! `xfcc`: the client certificate description and the XFCC header builder.
//!
//! The first byte picks the entry point; the rest is its input:
//! - 0: a DER blob as the TLS layer would hand it over:
//!   `PeerCertificate::from_der` (ztgate-filter), then the `mtls` filter's
//!   SVID rules and decision (`svid_id`, `MtlsFilter::decide`) and
//!   `xfcc_value` for what it yields;
//! - 1: certificate fields directly (NUL-separated: subject, URI SAN, DNS
//!   SANs), so `xfcc_value` sees any string, not only what x509-parser
//!   prints.
//!
//! Checked beyond "no panic": the XFCC element reads back, with Envoy's
//! grammar (`Key=Value` pairs joined by `;`, a value with `,` `;` `=` `"`
//! double-quoted with `\` escapes), into exactly the fields it was built
//! from: no value can add, drop or change a key (header injection into what
//! upstreams trust).

use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use ztgate_filter::{BuildContext, PeerCertificate, SpiffeId};
use ztgate_mtls::{config, svid_id, xfcc_value, MtlsFilter};

fn filter() -> &'static MtlsFilter {
    static F: OnceLock<MtlsFilter> = OnceLock::new();
    F.get_or_init(|| {
        let raw = config::Mtls {
            trust_domains: vec!["acme.test".into()],
            allowed_ids: vec!["spiffe://acme.test/ns/*/sa/**".into()],
            ..config::Mtls::default()
        };
        ztgate_mtls::build(&raw, &BuildContext::default(), "mtls").unwrap()
    })
}

pub fn run(data: &[u8]) {
    let Some((mode, rest)) = crate::mode(data) else {
        return;
    };
    if mode % 2 == 0 {
        der(rest);
    } else {
        fields(rest);
    }
}

fn der(bytes: &[u8]) {
    let Ok(cert) = PeerCertificate::from_der(bytes) else {
        return;
    };
    let _ = cert.thumbprint_b64url();
    let id = svid_id(&cert).ok();
    let (identity, _decision) = filter().decide(Some(&cert));
    if let Some(identity) = &identity {
        assert_eq!(identity.thumbprint(), &cert.sha256);
    }
    round_trip(&cert, id.as_ref().map(SpiffeId::as_str));
}

fn fields(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.split('\0');
    let subject = parts.next().unwrap_or_default().to_owned();
    let uri = parts.next().map(str::to_owned);
    let dns_sans: Vec<String> = parts.map(str::to_owned).collect();
    let cert = PeerCertificate {
        sha256: sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            bytes,
        ))
        .into(),
        uri_sans: uri.iter().cloned().collect(),
        dns_sans,
        subject,
        is_ca: bytes.len().is_multiple_of(7),
        not_after: UNIX_EPOCH,
    };
    if let Some(u) = &uri {
        let _ = SpiffeId::parse(u);
    }
    let _ = svid_id(&cert);
    let _ = filter().decide(Some(&cert));
    round_trip(&cert, uri.as_deref());
}

fn round_trip(cert: &PeerCertificate, uri: Option<&str>) {
    let value = xfcc_value(cert, uri);
    let mut want = vec![
        ("Hash".to_owned(), cert.sha256_hex()),
        ("Subject".to_owned(), cert.subject.clone()),
    ];
    if let Some(u) = uri {
        want.push(("URI".to_owned(), u.to_owned()));
    }
    want.extend(cert.dns_sans.iter().map(|d| ("DNS".to_owned(), d.clone())));
    match parse_element(&value) {
        Some(got) => assert_eq!(got, want, "XFCC {value:?} reads back differently"),
        None => panic!("XFCC {value:?} is not one well-formed element"),
    }
}

/// One XFCC element (Envoy, "x-forwarded-client-cert"): `Key=Value` pairs
/// separated by `;`; a value is either raw up to the next `;` or `,`, or
/// double-quoted with `\` escaping the next character. `None` when the
/// text is not exactly one element (an unquoted `,` starts another).
fn parse_element(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut key = String::new();
        loop {
            match chars.next()? {
                '=' => break,
                ';' | ',' | '"' => return None,
                c => key.push(c),
            }
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
            match chars.next() {
                None => {
                    out.push((key, value));
                    return Some(out);
                }
                Some(';') => {}
                Some(_) => return None,
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push((key, value));
                        return Some(out);
                    }
                    Some(';') => break,
                    Some(',') => return None,
                    Some(c) => value.push(c),
                }
            }
        }
        out.push((key, value));
    }
}
