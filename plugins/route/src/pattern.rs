//! `match.grpc` patterns: which gRPC methods a route covers.
//!
//! The pattern is `SERVICE[/METHOD]` (a leading `/` is accepted, so a path
//! copied from a log works):
//! - no `*`: exact (`orders.v1.Orders/Get`); `SERVICE` alone means every
//!   method of that service;
//! - a single trailing `*`: a prefix of `service/method`
//!   (`orders.v1.*` = every service of the package, `orders.v1.Orders/Get*`);
//! - anything else is a glob whose `*` never crosses `/`
//!   (`orders.*/Get`, `*.Orders/Get*`); a glob without `/METHOD` means any method.
//!
//! Only `*` is special; `?`, `[`, `{` and `**` are refused so a pattern
//! written for another glob dialect fails loudly instead of matching literally.

use ztgate_filter::wildcard;

/// A parsed `match.grpc` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodPattern {
    /// `service/method` exactly.
    Exact(String),
    /// Every `service/method` that starts with this string.
    Prefix(String),
    /// `*` globs on the service and on the method, matched separately.
    Glob { service: String, method: String },
}

/// Why a `match.grpc` pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty pattern")]
    Empty,
    #[error("more than one `/`: a pattern is SERVICE or SERVICE/METHOD")]
    TooManySlashes,
    #[error("empty service or method name")]
    EmptySegment,
    #[error("`**` is not supported; `*` matches within the service or the method")]
    DoubleStar,
    #[error("character {0:?} is not allowed; only `*` is a wildcard and names are letters, digits, `_`, `.` and `-`")]
    BadChar(char),
}

impl MethodPattern {
    /// Parse a `match.grpc` value.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let s = text.strip_prefix('/').unwrap_or(text);
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*' | '/')))
        {
            return Err(PatternError::BadChar(c));
        }
        if s.contains("**") {
            return Err(PatternError::DoubleStar);
        }
        let (service, method) = match s.split_once('/') {
            Some((_, m)) if m.contains('/') => return Err(PatternError::TooManySlashes),
            Some((svc, m)) => (svc, Some(m)),
            None => (s, None),
        };
        if service.is_empty() || method.is_some_and(str::is_empty) {
            return Err(PatternError::EmptySegment);
        }
        let stars = s.bytes().filter(|&b| b == b'*').count();
        Ok(match (stars, method) {
            (0, Some(m)) => MethodPattern::Exact(format!("{service}/{m}")),
            (0, None) => MethodPattern::Prefix(format!("{service}/")),
            (1, _) if s.ends_with('*') => MethodPattern::Prefix(s.trim_end_matches('*').to_owned()),
            (_, m) => MethodPattern::Glob {
                service: service.to_owned(),
                method: m.unwrap_or("*").to_owned(),
            },
        })
    }

    /// Whether a request's `service/method` (the `:path` without its leading
    /// `/`, already split) matches.
    pub fn matches(&self, service: &str, method: &str) -> bool {
        match self {
            MethodPattern::Exact(e) => e.split_once('/') == Some((service, method)),
            MethodPattern::Prefix(p) => {
                // `service/method` starts with `p`, without building the string.
                match p.split_once('/') {
                    Some((ps, pm)) => ps == service && method.starts_with(pm),
                    None => service.starts_with(p.as_str()),
                }
            }
            MethodPattern::Glob {
                service: ps,
                method: pm,
            } => wildcard::matches(ps, service) && wildcard::matches(pm, method),
        }
    }

    /// How the route table indexes a glob: by the longest literal it must
    /// contain at a fixed place (longer literals are shared by fewer globs,
    /// so fewer candidates are checked per lookup). Ties go to the earlier
    /// kind in [`GlobAnchor`]'s order.
    pub(crate) fn glob_anchor(&self) -> Option<GlobAnchor> {
        let MethodPattern::Glob { service, method } = self else {
            return None;
        };
        let lit_prefix = |s: &str| s.split('*').next().unwrap_or("").to_owned();
        let lit_suffix = |s: &str| s.rsplit('*').next().unwrap_or("").to_owned();
        let candidates = [
            GlobAnchor::Prefix(lit_prefix(&format!("{service}/{method}"))),
            GlobAnchor::ServiceSuffix(lit_suffix(service)),
            GlobAnchor::MethodPrefix(lit_prefix(method)),
            GlobAnchor::MethodSuffix(lit_suffix(method)),
        ];
        let mut best = GlobAnchor::None;
        for c in candidates {
            if c.literal_len() > best.literal_len() {
                best = c;
            }
        }
        Some(best)
    }
}

/// The literal a glob is indexed under (see [`crate::table`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GlobAnchor {
    /// Literal start of `service/method` (`orders.*/Get` → `orders.`).
    Prefix(String),
    /// Literal end of the service (`*.Orders/Get*` → `.Orders`).
    ServiceSuffix(String),
    /// Literal start of the method (`*/Get*` → `Get`).
    MethodPrefix(String),
    /// Literal end of the method (`*/*Item` → `Item`).
    MethodSuffix(String),
    /// Starts and ends with `*` in both parts (`*.v1.*/*`): scanned.
    None,
}

impl GlobAnchor {
    fn literal_len(&self) -> usize {
        match self {
            GlobAnchor::Prefix(s)
            | GlobAnchor::ServiceSuffix(s)
            | GlobAnchor::MethodPrefix(s)
            | GlobAnchor::MethodSuffix(s) => s.len(),
            GlobAnchor::None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> MethodPattern {
        MethodPattern::parse(s).unwrap()
    }

    #[test]
    fn classifies() {
        assert_eq!(p("a.B/C"), MethodPattern::Exact("a.B/C".into()));
        assert_eq!(p("/a.B/C"), MethodPattern::Exact("a.B/C".into()));
        assert_eq!(p("a.B"), MethodPattern::Prefix("a.B/".into()));
        assert_eq!(p("a.*"), MethodPattern::Prefix("a.".into()));
        assert_eq!(p("a.B/*"), MethodPattern::Prefix("a.B/".into()));
        assert_eq!(p("a.B/Get*"), MethodPattern::Prefix("a.B/Get".into()));
        assert_eq!(p("*"), MethodPattern::Prefix(String::new()));
        assert_eq!(
            p("a.*/Get*"),
            MethodPattern::Glob {
                service: "a.*".into(),
                method: "Get*".into()
            }
        );
        assert_eq!(
            p("*.B"),
            MethodPattern::Glob {
                service: "*.B".into(),
                method: "*".into()
            }
        );
    }

    #[test]
    fn refuses_bad_patterns() {
        use PatternError::*;
        assert_eq!(MethodPattern::parse(""), Err(Empty));
        assert_eq!(MethodPattern::parse("/"), Err(Empty));
        assert_eq!(MethodPattern::parse("//"), Err(EmptySegment));
        assert_eq!(MethodPattern::parse("a/"), Err(EmptySegment));
        assert_eq!(MethodPattern::parse("a/b/c"), Err(TooManySlashes));
        assert_eq!(MethodPattern::parse("a/**"), Err(DoubleStar));
        assert_eq!(MethodPattern::parse("a/Get?"), Err(BadChar('?')));
        assert_eq!(MethodPattern::parse("a b"), Err(BadChar(' ')));
    }

    #[test]
    fn glob_anchors() {
        use GlobAnchor::*;
        let a = |s: &str| p(s).glob_anchor().unwrap();
        assert_eq!(a("orders.*/Get"), Prefix("orders.".into()));
        assert_eq!(a("a.B/G*t"), Prefix("a.B/G".into()));
        // the longest literal wins
        assert_eq!(a("p.*.Orders/List*"), ServiceSuffix(".Orders".into()));
        assert_eq!(a("p.*/*Items"), MethodSuffix("Items".into()));
        assert_eq!(a("*.Orders/Get*"), ServiceSuffix(".Orders".into()));
        assert_eq!(a("*/Get*"), MethodPrefix("Get".into()));
        assert_eq!(a("*/*Item"), MethodSuffix("Item".into()));
        assert_eq!(a("*.v1.*/*"), None);
        assert_eq!(p("a.B/C").glob_anchor(), Option::None);
    }

    #[test]
    fn matching() {
        assert!(p("a.B/C").matches("a.B", "C"));
        assert!(!p("a.B/C").matches("a.B", "CD"));
        assert!(!p("a.B/C").matches("a.BC", ""));
        assert!(p("a.B").matches("a.B", "Anything"));
        assert!(!p("a.B").matches("a.BC", "X"));
        assert!(p("a.*").matches("a.B", "X"));
        assert!(p("a.B/Get*").matches("a.B", "GetX"));
        assert!(!p("a.B/Get*").matches("a.B", "ListX"));
        assert!(p("*").matches("x", "y"));
        // a glob star stays within its segment
        assert!(p("a.*/Get").matches("a.B", "Get"));
        assert!(!p("a.*/Get").matches("a.B", "GetX"));
        assert!(p("*.B/Get*").matches("x.y.B", "GetZ"));
        assert!(!p("*.B/Get*").matches("x.y.C", "GetZ"));
    }
}
