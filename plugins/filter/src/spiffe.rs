//! SPIFFE IDs and the patterns policies use to allow them.
//!
//! Parsing follows the SPIFFE ID spec (spiffe/standards, SPIFFE-ID.md §2):
//! scheme `spiffe`, a lowercase trust domain of `[a-z0-9.-_]`, no port or
//! userinfo, path segments of `[A-Za-z0-9.-_]` that are neither empty nor
//! `.`/`..`, no query or fragment, at most 2048 bytes.

/// Longest SPIFFE ID accepted (SPIFFE-ID.md §2.3).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// A syntactically valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    id: String,
    td_len: usize,
}

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("does not start with spiffe://")]
    Scheme,
    #[error("longer than {MAX_SPIFFE_ID_LEN} bytes")]
    TooLong,
    #[error("trust domain is empty or has characters outside [a-z0-9.-_]")]
    TrustDomain,
    #[error("path segment is empty, `.`/`..`, or has characters outside [A-Za-z0-9.-_]")]
    Path,
}

impl SpiffeId {
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let td_ok = !td.is_empty()
            && td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if !td_ok {
            return Err(SpiffeIdError::TrustDomain);
        }
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                let ok = !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
                if !ok {
                    return Err(SpiffeIdError::Path);
                }
            }
        }
        Ok(Self {
            id: s.to_owned(),
            td_len: td.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn trust_domain(&self) -> &str {
        let start = "spiffe://".len();
        self.id.get(start..start + self.td_len).unwrap_or("")
    }

    pub fn into_string(self) -> String {
        self.id
    }
}

/// A pattern over SPIFFE IDs: `*` matches exactly one path segment (or the
/// rest of one, e.g. `sa/order*`), `**` as a whole last segment matches any
/// depth (at least one segment). No other wildcards: predictable beats clever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffePattern {
    raw: String,
    segments: Vec<String>,
}

/// Why a pattern is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffePatternError {
    #[error("pattern must start with spiffe://")]
    Scheme,
    #[error("`**` is only allowed as the whole last segment")]
    DoubleStar,
    #[error("the trust domain of a pattern cannot contain wildcards")]
    WildTrustDomain,
}

impl SpiffePattern {
    pub fn parse(s: &str) -> Result<Self, SpiffePatternError> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or(SpiffePatternError::Scheme)?;
        let segments: Vec<String> = rest.split('/').map(str::to_owned).collect();
        if segments.first().is_some_and(|td| td.contains('*')) {
            return Err(SpiffePatternError::WildTrustDomain);
        }
        let last = segments.len().saturating_sub(1);
        for (i, seg) in segments.iter().enumerate() {
            if seg.contains("**") && (seg != "**" || i != last) {
                return Err(SpiffePatternError::DoubleStar);
            }
        }
        Ok(Self {
            raw: s.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn matches(&self, id: &str) -> bool {
        let Some(rest) = id.strip_prefix("spiffe://") else {
            return false;
        };
        let mut parts = rest.split('/');
        for (i, pat) in self.segments.iter().enumerate() {
            if pat == "**" && i + 1 == self.segments.len() {
                return parts.next().is_some();
            }
            match parts.next() {
                Some(part) if segment_matches(pat, part) => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// `*` inside one segment: any run of characters (none crossing `/`).
fn segment_matches(pat: &str, s: &str) -> bool {
    let Some((head, tail)) = pat.split_once('*') else {
        return pat == s;
    };
    let Some(rest) = s.strip_prefix(head) else {
        return false;
    };
    if !tail.contains('*') {
        return rest.len() >= tail.len() && rest.ends_with(tail);
    }
    (0..=rest.len()).any(|i| rest.is_char_boundary(i) && segment_matches(tail, &rest[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::parse("spiffe://acme.test/ns/shop/sa/orders").unwrap();
        assert_eq!(id.trust_domain(), "acme.test");
        assert_eq!(
            SpiffeId::parse("spiffe://acme.test")
                .unwrap()
                .trust_domain(),
            "acme.test"
        );
    }

    #[test]
    fn refuses_invalid_ids() {
        for bad in [
            "http://acme.test/x",
            "spiffe://",
            "spiffe://ACME.test/x",
            "spiffe://acme.test:443/x",
            "spiffe://user@acme.test/x",
            "spiffe://acme.test/",
            "spiffe://acme.test//x",
            "spiffe://acme.test/a/../b",
            "spiffe://acme.test/a?b",
            "spiffe://acme.test/a#b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            SpiffeId::parse(&format!("spiffe://a/{}", "x".repeat(3000))),
            Err(SpiffeIdError::TooLong)
        );
    }

    #[test]
    fn patterns() {
        let p = SpiffePattern::parse("spiffe://acme.test/ns/*/sa/order*").unwrap();
        assert!(p.matches("spiffe://acme.test/ns/shop/sa/orders"));
        assert!(!p.matches("spiffe://acme.test/ns/shop/extra/sa/orders"));
        assert!(!p.matches("spiffe://evil.test/ns/shop/sa/orders"));
        let any = SpiffePattern::parse("spiffe://acme.test/**").unwrap();
        assert!(any.matches("spiffe://acme.test/a/b/c"));
        assert!(!any.matches("spiffe://acme.test"));
        let exact = SpiffePattern::parse("spiffe://acme.test/ns/a").unwrap();
        assert!(exact.matches("spiffe://acme.test/ns/a"));
        assert!(!exact.matches("spiffe://acme.test/ns/a/b"));
        assert!(SpiffePattern::parse("spiffe://*.test/x").is_err());
        assert!(SpiffePattern::parse("spiffe://a/**/b").is_err());
    }
}
