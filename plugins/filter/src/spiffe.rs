//! SPIFFE IDs and the patterns policies use to allow them — one syntax for
//! `mtls.allowed_ids` and the route `spiffe:` lists.
//!
//! Parsing follows the SPIFFE ID spec (spiffe/standards, SPIFFE-ID.md §2):
//! scheme `spiffe`, a lowercase trust domain of `[a-z0-9.-_]`, no port or
//! userinfo, path segments of `[A-Za-z0-9.-_]` that are neither empty nor
//! `.`/`..`, no query or fragment, at most 2048 bytes.
//!
//! Patterns: the trust domain is always literal (a wildcard there would
//! trust workloads of a foreign trust domain, which is exactly what SPIFFE
//! federation is careful about), and each path segment is literal, a `*`
//! glob within that segment (`sa-*`), or `**`. A `**` in the middle or at
//! the start matches zero or more segments; a trailing `**` matches one or
//! more (`ns/shop/**` is everything *under* `ns/shop`, as in `.gitignore`).

use crate::wildcard;

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

const SCHEME: &str = "spiffe://";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Glob(String),
    AnyDepth,
}

impl Segment {
    fn matches_one(&self, seg: &str) -> bool {
        match self {
            Segment::Literal(l) => l == seg,
            Segment::Glob(g) => wildcard::matches(g, seg),
            Segment::AnyDepth => true,
        }
    }
}

/// Why a SPIFFE ID pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffePatternError {
    #[error("must start with `spiffe://`")]
    Scheme,
    #[error("the trust domain must be non-empty lowercase letters, digits, `.`, `-`, `_`, without wildcards")]
    TrustDomain,
    #[error("empty path segment (`//` or a trailing `/`)")]
    EmptySegment,
    #[error("`**` must be a whole path segment")]
    PartialDoubleStar,
    #[error("character {0:?} is not allowed in a SPIFFE ID path segment")]
    BadChar(char),
}

/// One compiled SPIFFE ID pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffePattern {
    text: String,
    trust_domain: String,
    segments: Vec<Segment>,
}

impl SpiffePattern {
    pub fn parse(text: &str) -> Result<Self, SpiffePatternError> {
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or(SpiffePatternError::Scheme)?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        let td_ok = !td.is_empty()
            && td.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        if !td_ok {
            return Err(SpiffePatternError::TrustDomain);
        }
        let mut segments = Vec::new();
        if rest.contains('/') {
            for seg in path.split('/') {
                segments.push(parse_segment(seg)?);
            }
        }
        Ok(Self {
            text: text.to_owned(),
            trust_domain: td.to_owned(),
            segments,
        })
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a SPIFFE ID (as put in `Facts` by `mtls`) matches.
    pub fn matches(&self, id: &str) -> bool {
        let Some(rest) = id.strip_prefix(SCHEME) else {
            return false;
        };
        let (td, path) = match rest.split_once('/') {
            Some((td, path)) => (td, Some(path)),
            None => (rest, None),
        };
        if td != self.trust_domain {
            return false;
        }
        // The segments on the stack (an ID of more than 63 takes the vector
        // path): every `mtls.allowed_ids` pattern runs on every request.
        let mut buf = [""; 63];
        let mut n = 0;
        for seg in path.into_iter().flat_map(|p| p.split('/')) {
            match buf.get_mut(n) {
                Some(slot) => *slot = seg,
                None => {
                    let segs: Vec<&str> = path.map(|p| p.split('/').collect()).unwrap_or_default();
                    return self.match_segments(&segs);
                }
            }
            n += 1;
        }
        self.match_segments_bits(buf.get(..n).unwrap_or_default())
    }

    /// [`SpiffePattern::match_segments`] with the reachable prefixes as
    /// bits of a `u64` instead of two vectors per pattern segment (1.8k
    /// instructions and five allocations a match before); `segs` has at
    /// most 63 entries.
    fn match_segments_bits(&self, segs: &[&str]) -> bool {
        let n = segs.len();
        let mut reach: u64 = 1;
        let last = self.segments.len().saturating_sub(1);
        for (i, pat) in self.segments.iter().enumerate() {
            let mut next: u64 = 0;
            match pat {
                Segment::AnyDepth => {
                    // zero or more segments; a trailing `**` needs at least one
                    let min = usize::from(i == last);
                    let mut seen = false;
                    for k in min..=n {
                        seen |= reach >> (k - min) & 1 == 1;
                        if seen {
                            next |= 1 << k;
                        }
                    }
                }
                _ => {
                    for (k, seg) in segs.iter().enumerate() {
                        if reach >> k & 1 == 1 && pat.matches_one(seg) {
                            next |= 1 << (k + 1);
                        }
                    }
                }
            }
            reach = next;
        }
        reach >> n & 1 == 1
    }

    /// Which prefixes of `segs` the pattern can have consumed, one pattern
    /// segment at a time: O(pattern × id) with no backtracking blow-up.
    fn match_segments(&self, segs: &[&str]) -> bool {
        let n = segs.len();
        let mut reach = vec![false; n + 1];
        if let Some(r) = reach.first_mut() {
            *r = true;
        }
        let last = self.segments.len().saturating_sub(1);
        for (i, pat) in self.segments.iter().enumerate() {
            let mut next = vec![false; n + 1];
            match pat {
                Segment::AnyDepth => {
                    // zero or more segments; a trailing `**` needs at least one
                    let min = usize::from(i == last);
                    let mut seen = false;
                    for (k, slot) in next.iter_mut().enumerate() {
                        if k >= min {
                            seen |= reach.get(k - min).copied().unwrap_or(false);
                        }
                        *slot = seen;
                    }
                }
                _ => {
                    for (k, seg) in segs.iter().enumerate() {
                        if reach.get(k).copied().unwrap_or(false) && pat.matches_one(seg) {
                            if let Some(slot) = next.get_mut(k + 1) {
                                *slot = true;
                            }
                        }
                    }
                }
            }
            reach = next;
        }
        reach.last().copied().unwrap_or(false)
    }
}

fn parse_segment(seg: &str) -> Result<Segment, SpiffePatternError> {
    if seg.is_empty() {
        return Err(SpiffePatternError::EmptySegment);
    }
    if seg == "**" {
        return Ok(Segment::AnyDepth);
    }
    if seg.contains("**") {
        return Err(SpiffePatternError::PartialDoubleStar);
    }
    if let Some(c) = seg
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*')))
    {
        return Err(SpiffePatternError::BadChar(c));
    }
    Ok(if seg.contains('*') {
        Segment::Glob(seg.to_owned())
    } else {
        Segment::Literal(seg.to_owned())
    })
}

/// A non-empty list of patterns; an identity is allowed when any matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeAllowList {
    patterns: Vec<SpiffePattern>,
}

impl SpiffeAllowList {
    pub fn new(patterns: Vec<SpiffePattern>) -> Self {
        Self { patterns }
    }

    pub fn patterns(&self) -> &[SpiffePattern] {
        &self.patterns
    }

    /// Whether this SPIFFE ID is on the list; no ID is never on it.
    pub fn allows(&self, id: Option<&str>) -> bool {
        id.is_some_and(|id| self.patterns.iter().any(|p| p.matches(id)))
    }
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
}

#[cfg(test)]
mod pattern_tests {
    use super::*;

    fn m(p: &str, id: &str) -> bool {
        SpiffePattern::parse(p).unwrap().matches(id)
    }

    #[test]
    fn literal_and_single_star() {
        assert!(m(
            "spiffe://acme.test/ns/shop/sa/w",
            "spiffe://acme.test/ns/shop/sa/w"
        ));
        assert!(!m(
            "spiffe://acme.test/ns/shop/sa/w",
            "spiffe://acme.test/ns/shop/sa/x"
        ));
        assert!(!m(
            "spiffe://acme.test/ns/shop/sa/w",
            "spiffe://evil.test/ns/shop/sa/w"
        ));
        assert!(m(
            "spiffe://acme.test/ns/shop/*",
            "spiffe://acme.test/ns/shop/sa"
        ));
        // `*` stays within one segment
        assert!(!m(
            "spiffe://acme.test/ns/shop/*",
            "spiffe://acme.test/ns/shop/sa/w"
        ));
        assert!(m(
            "spiffe://acme.test/ns/*/sa/w-*",
            "spiffe://acme.test/ns/shop/sa/w-1"
        ));
        assert!(!m(
            "spiffe://acme.test/ns/shop",
            "spiffe://acme.test/ns/shopping"
        ));
        assert!(m("spiffe://acme.test", "spiffe://acme.test"));
        assert!(!m("spiffe://acme.test", "spiffe://acme.test/x"));
    }

    #[test]
    fn double_star() {
        assert!(m(
            "spiffe://acme.test/ns/**",
            "spiffe://acme.test/ns/shop/sa/w"
        ));
        assert!(m("spiffe://acme.test/ns/**", "spiffe://acme.test/ns/shop"));
        // trailing `**` is "everything under", not the parent itself
        assert!(!m("spiffe://acme.test/ns/**", "spiffe://acme.test/ns"));
        assert!(m("spiffe://acme.test/**/sa/w", "spiffe://acme.test/sa/w"));
        assert!(m(
            "spiffe://acme.test/**/sa/w",
            "spiffe://acme.test/ns/a/b/sa/w"
        ));
        assert!(!m(
            "spiffe://acme.test/**/sa/w",
            "spiffe://acme.test/ns/sa/x"
        ));
        assert!(!m("spiffe://acme.test/**", "spiffe://other.test/ns"));
    }

    /// The bitmask matcher answers exactly as the vector one, over every
    /// pattern × ID of a grid built from the shapes that matter (literals,
    /// globs, `**` first, middle, last and twice; IDs of 0–5 segments), and
    /// an ID of 70 segments takes the vector path.
    #[test]
    fn the_bitmask_matcher_agrees_with_the_vector_one() {
        let parts = ["ns", "shop", "sa", "w-1", "*", "w-*", "**"];
        let mut patterns = vec!["spiffe://acme.test".to_owned()];
        for a in parts {
            patterns.push(format!("spiffe://acme.test/{a}"));
            for b in parts {
                patterns.push(format!("spiffe://acme.test/{a}/{b}"));
                for c in ["sa", "**", "w-*"] {
                    patterns.push(format!("spiffe://acme.test/{a}/{b}/{c}"));
                }
            }
        }
        let words = ["ns", "shop", "sa", "w-1", "x"];
        let mut ids = vec![
            "spiffe://acme.test".to_owned(),
            "spiffe://acme.test/".to_owned(),
        ];
        let mut paths = vec![String::new()];
        for _ in 0..5 {
            paths = paths
                .iter()
                .flat_map(|p| words.iter().map(move |w| format!("{p}/{w}")))
                .take(1000)
                .collect();
            ids.extend(paths.iter().map(|p| format!("spiffe://acme.test{p}")));
        }
        let mut compared = 0;
        for text in &patterns {
            let Ok(p) = SpiffePattern::parse(text) else {
                continue;
            };
            for id in &ids {
                let path = id["spiffe://acme.test".len()..].strip_prefix('/');
                let segs: Vec<&str> = path.map(|p| p.split('/').collect()).unwrap_or_default();
                let vector = p.match_segments(&segs);
                assert_eq!(p.match_segments_bits(&segs), vector, "{text} vs {id}");
                assert_eq!(p.matches(id), vector, "{text} vs {id}");
                compared += 1;
            }
        }
        assert!(compared > 100_000, "{compared}");
        let long = format!("spiffe://acme.test{}", "/a".repeat(70));
        assert!(m("spiffe://acme.test/**", &long));
        assert!(m("spiffe://acme.test/**/a", &long));
        assert!(!m("spiffe://acme.test/**/b", &long));
    }

    #[test]
    fn refuses_bad_patterns() {
        use SpiffePatternError::*;
        let e = |p: &str| SpiffePattern::parse(p).unwrap_err();
        assert_eq!(e("acme.test/ns"), Scheme);
        assert_eq!(e("spiffe://*.test/ns"), TrustDomain);
        assert_eq!(e("spiffe://ACME.test/ns"), TrustDomain);
        assert_eq!(e("spiffe:///ns"), TrustDomain);
        assert_eq!(e("spiffe://acme.test/ns//x"), EmptySegment);
        assert_eq!(e("spiffe://acme.test/ns/"), EmptySegment);
        assert_eq!(e("spiffe://acme.test/ns/a**"), PartialDoubleStar);
        assert_eq!(e("spiffe://acme.test/ns/a?"), BadChar('?'));
    }

    #[test]
    fn allow_list_refuses_missing_identity() {
        let l = SpiffeAllowList::new(vec![SpiffePattern::parse("spiffe://acme.test/**").unwrap()]);
        assert!(l.allows(Some("spiffe://acme.test/a")));
        assert!(!l.allows(None));
    }
}
