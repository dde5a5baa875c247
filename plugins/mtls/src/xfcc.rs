//! Envoy's `x-forwarded-client-cert` format.
//!
//! Elements are `Key=Value` pairs separated by `;`; a value containing `,`,
//! `;`, `=` or `"` is double-quoted with `"` and `\` backslash-escaped
//! (Envoy docs, "x-forwarded-client-cert").

use ztgate_filter::PeerCertificate;

/// The XFCC element for one client certificate.
pub fn xfcc_value(cert: &PeerCertificate, spiffe_id: Option<&str>) -> String {
    let mut out = format!("Hash={}", cert.sha256_hex());
    out.push_str(";Subject=");
    push_value(&mut out, &cert.subject);
    if let Some(uri) = spiffe_id {
        out.push_str(";URI=");
        push_value(&mut out, uri);
    }
    for dns in &cert.dns_sans {
        out.push_str(";DNS=");
        push_value(&mut out, dns);
    }
    out
}

fn push_value(out: &mut String, v: &str) {
    if v.contains([',', ';', '=', '"']) {
        out.push('"');
        for c in v.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_subject_with_commas() {
        let c = PeerCertificate {
            sha256: [0xab; 32],
            uri_sans: vec![],
            dns_sans: vec!["a.local".into()],
            subject: "CN=orders,O=Acme \"Inc\"".into(),
            is_ca: false,
            not_after: std::time::UNIX_EPOCH,
        };
        let v = xfcc_value(&c, Some("spiffe://acme.test/x"));
        assert_eq!(
            v,
            format!(
                "Hash={};Subject=\"CN=orders,O=Acme \\\"Inc\\\"\";URI=spiffe://acme.test/x;DNS=a.local",
                "ab".repeat(32)
            )
        );
    }
}
