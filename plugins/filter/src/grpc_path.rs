//! Canonical gRPC request paths: what the route table matches must be
//! exactly what the upstream receives.
//!
//! gRPC names a call by `:path` = `/` Service-Name `/` Method-Name (gRPC over
//! HTTP/2 spec, "Requests"), with protobuf names: the service a dot-separated
//! full name (`orders.v1.Orders`), the method an identifier (`Get`). Anything
//! else is a path that some layer may read differently from the route
//! table. A backend framework that decodes `%2F`, resolves `..`, drops a
//! query or a `;param`, or treats `\` as a separator would run
//! `/orders.v1.Orders/..%2Fadmin.v1.Admin%2FDelete` as `admin.v1.Admin/Delete`
//! while the gateway routed (and authorised) it as an `orders.v1.Orders`
//! call; `/orders.v1.Orders/Get?/../x` was matched without its query and
//! forwarded with it. So a non-canonical path is refused before routing
//! (`path_not_canonical`, 12 UNIMPLEMENTED) rather than normalised: a
//! normaliser would be one more reading that could differ from the
//! backend's, and no real gRPC client sends such a path.
//!
//! HTTP/2 has already dropped a `#fragment` before the gateway sees the
//! path (the `http` crate strips it), so the route table and the upstream
//! agree on such a path; a `#` that is still present is refused anyway.

/// Why a path is not canonical (the refusal's message; never the path
/// itself, which is the caller's input and may be long).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotCanonical {
    #[error("the path must start with `/`")]
    NotAbsolute,
    #[error("the path carries a query (`?`)")]
    Query,
    #[error("the path carries a fragment (`#`)")]
    Fragment,
    #[error("the path has a percent-escape")]
    PercentEscape,
    #[error("the path has a dot segment (`.` or `..`)")]
    DotSegment,
    #[error("the path has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    #[error("the path has {0} segments, not `/package.Service/Method`")]
    SegmentCount(usize),
    /// A byte outside visible ASCII (controls, space, DEL, non-ASCII).
    #[error("the path has a byte outside visible ASCII (0x{0:02x})")]
    NotVisibleAscii(u8),
    #[error("the service is not a dot-separated protobuf name")]
    ServiceName,
    #[error("the method is not a protobuf identifier")]
    MethodName,
}

/// Check that `path_and_query` (the request's `:path` as received, query
/// included) is canonical `/package.Service/Method`: two non-empty
/// segments, the service dot-separated identifiers, the method one
/// identifier (`[A-Za-z_]` then `[A-Za-z0-9_]*`). Bytes, not `str`: an
/// HTTP/1.1 request target may not be UTF-8. The first problem found is
/// returned; a query, fragment or escape is named before the shape of the
/// segments, as it is the likelier attack.
pub fn check(path_and_query: &[u8]) -> Result<(), NotCanonical> {
    let Some(rest) = path_and_query.strip_prefix(b"/") else {
        return Err(NotCanonical::NotAbsolute);
    };
    for &b in path_and_query {
        match b {
            b'?' => return Err(NotCanonical::Query),
            b'#' => return Err(NotCanonical::Fragment),
            b'%' => return Err(NotCanonical::PercentEscape),
            0x21..=0x7e => {}
            other => return Err(NotCanonical::NotVisibleAscii(other)),
        }
    }
    let segments: Vec<&[u8]> = rest.split(|b| *b == b'/').collect();
    if segments.iter().any(|s| *s == b"." || *s == b"..") {
        return Err(NotCanonical::DotSegment);
    }
    if segments.iter().any(|s| s.is_empty()) {
        return Err(NotCanonical::EmptySegment);
    }
    let [service, method] = segments.as_slice() else {
        return Err(NotCanonical::SegmentCount(segments.len()));
    };
    if !service.split(|b| *b == b'.').all(is_identifier) {
        return Err(NotCanonical::ServiceName);
    }
    if !is_identifier(method) {
        return Err(NotCanonical::MethodName);
    }
    Ok(())
}

/// A protobuf identifier: a letter or `_`, then letters, digits and `_`.
fn is_identifier(s: &[u8]) -> bool {
    let mut bytes = s.iter().copied();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use NotCanonical::*;

    /// Each case: the path, the expected answer, and why it matters.
    const CASES: &[(&str, Result<(), NotCanonical>)] = &[
        // Canonical: what every gRPC client sends.
        ("/orders.v1.Orders/Get", Ok(())),
        ("/grpc.health.v1.Health/Check", Ok(())),
        ("/Greeter/SayHello", Ok(())),
        ("/_pkg.v2._Svc/_method_1", Ok(())),
        // Issue 11: escapes routed as one service, run as another.
        (
            "/orders.v1.Orders/..%2Fadmin.v1.Admin%2FDelete",
            Err(PercentEscape),
        ),
        ("/orders.v1.Orders/Get%00", Err(PercentEscape)),
        // Issue 11: matched without its query, forwarded with it.
        ("/orders.v1.Orders/Get?/../x", Err(Query)),
        ("/orders.v1.Orders/Get?", Err(Query)),
        ("/orders.v1.Orders/Get#frag", Err(Fragment)),
        // Dot and empty segments: resolved or collapsed by some servers.
        (
            "/orders.v1.Orders/../admin.v1.Admin/Delete",
            Err(DotSegment),
        ),
        ("/./orders.v1.Orders/Get", Err(DotSegment)),
        ("/orders.v1.Orders/.", Err(DotSegment)),
        ("//orders.v1.Orders/Get", Err(EmptySegment)),
        ("/orders.v1.Orders//Get", Err(EmptySegment)),
        ("/orders.v1.Orders/Get/", Err(EmptySegment)),
        ("/", Err(EmptySegment)),
        // Not exactly two segments.
        ("/orders.v1.Orders", Err(SegmentCount(1))),
        ("/orders.v1.Orders/Get/x", Err(SegmentCount(3))),
        // Not a path at all.
        ("", Err(NotAbsolute)),
        ("*", Err(NotAbsolute)),
        ("orders.v1.Orders/Get", Err(NotAbsolute)),
        // Outside visible ASCII.
        ("/orders.v1.Orders/Get ", Err(NotVisibleAscii(b' '))),
        ("/orders.v1.Orders/G\u{7f}", Err(NotVisibleAscii(0x7f))),
        ("/orders.v1.Orders/Gét", Err(NotVisibleAscii(0xc3))),
        // Visible ASCII, but read as a parameter or a separator elsewhere.
        ("/orders.v1.Orders/Delete;x", Err(MethodName)),
        ("/orders.v1.Orders/a\\..\\b", Err(MethodName)),
        ("/orders.v1..Orders/Get", Err(ServiceName)),
        ("/orders.v1.Orders./Get", Err(ServiceName)),
        ("/.orders/Get", Err(ServiceName)),
        ("/orders-v1.Orders/Get", Err(ServiceName)),
        ("/orders.v1.Orders/1Get", Err(MethodName)),
        ("/orders.v1.Orders/Get.x", Err(MethodName)),
    ];

    #[test]
    fn table() {
        for (path, want) in CASES {
            assert_eq!(check(path.as_bytes()), *want, "{path:?}");
        }
    }

    /// Every prefix of a canonical path is either refused or canonical
    /// itself, and nothing panics (the slicing is on `split`, never indexes).
    #[test]
    fn every_prefix_answers_without_panicking() {
        let p = "/orders.v1.Orders/Get";
        for end in 0..=p.len() {
            let prefix = p.get(..end).unwrap();
            let _ = check(prefix.as_bytes());
        }
        assert_eq!(check(b"/orders.v1.Orders/G"), Ok(()));
        assert_eq!(check(b"/orders.v1.Orders/"), Err(EmptySegment));
        // Not UTF-8 at all (an HTTP/1.1 request target can be anything).
        assert_eq!(
            check(b"/orders.v1.Orders/G\xff"),
            Err(NotVisibleAscii(0xff))
        );
    }

    #[test]
    fn messages_never_echo_the_path() {
        let e = check(b"/orders.v1.Orders/..%2Fsecret").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
