//! `*` wildcard matching inside one segment (a gRPC service or method name,
//! or one path segment of a SPIFFE ID). Callers split on `/` first, which is
//! how "`*` never crosses `/`" is enforced.

/// Whether `text` matches `pattern`, where `*` matches any run of bytes
/// (including none) and every other byte matches itself.
///
/// Greedy with a single backtrack point: linear for the usual one or two
/// stars, O(pattern × text) at worst; both sides are short names.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (pat, txt) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0usize, 0usize);
    // Position after the last `*` seen and the text position it resumed at.
    let mut backtrack: Option<(usize, usize)> = None;
    while let Some(&c) = txt.get(t) {
        match pat.get(p) {
            Some(b'*') => {
                backtrack = Some((p + 1, t));
                p += 1;
            }
            Some(&pc) if pc == c => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((bp, bt)) => {
                    // Let the last star swallow one more byte and retry.
                    p = bp;
                    t = bt + 1;
                    backtrack = Some((bp, bt + 1));
                }
                None => return false,
            },
        }
    }
    pat.get(p..)
        .is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_match_runs() {
        assert!(matches("Get*", "Get"));
        assert!(matches("Get*", "GetOrder"));
        assert!(matches("*Order", "GetOrder"));
        assert!(matches("G*t*r", "GetOrder"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("Get*", "List"));
        assert!(!matches("*Order", "GetOrders"));
        assert!(!matches("abc", "ab"));
        assert!(!matches("ab", "abc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
    }
}
