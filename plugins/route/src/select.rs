//! A route's `select:` list: which upstream pool serves this caller.
//!
//! Entries are tried in order and the first the caller satisfies wins, so
//! the most privileged pool goes first and the broadest rule last. When no
//! entry fits, the denial says what was missing: `scope_missing` when some
//! entry's scope rule failed (the caller could fix it with another token),
//! otherwise the SPIFFE rules refused the workload (`identity_not_allowed`,
//! or `client_cert_missing` when no client certificate was presented at all).

use std::sync::Arc;

use ztgate_filter::{Denial, Reason};

use ztgate_filter::spiffe::SpiffeAllowList;

/// `scopes:` of a select entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeRule {
    /// Every listed scope must be granted.
    All(Vec<String>),
    /// At least one listed scope must be granted.
    Any(Vec<String>),
}

impl ScopeRule {
    /// Whether the token's scopes satisfy the rule. `granted` is small (a
    /// token's scopes), so a linear `contains` is cheaper than a set.
    pub fn satisfied_by(&self, granted: &[String]) -> bool {
        match self {
            ScopeRule::All(need) => need.iter().all(|s| granted.contains(s)),
            ScopeRule::Any(need) => need.iter().any(|s| granted.contains(s)),
        }
    }
}

/// One compiled entry of `select:`.
#[derive(Debug, Clone)]
pub struct SelectEntry {
    pub(crate) scopes: Option<ScopeRule>,
    pub(crate) spiffe: Option<SpiffeAllowList>,
    pub(crate) upstream: Arc<str>,
}

impl SelectEntry {
    pub fn scopes(&self) -> Option<&ScopeRule> {
        self.scopes.as_ref()
    }

    pub fn spiffe(&self) -> Option<&SpiffeAllowList> {
        self.spiffe.as_ref()
    }

    /// The upstream pool this entry sends to.
    pub fn upstream(&self) -> &Arc<str> {
        &self.upstream
    }

    /// Whether the entry has no rule at all (and so always wins).
    pub fn is_unconditional(&self) -> bool {
        self.scopes.is_none() && self.spiffe.is_none()
    }
}

/// What the route filter knows about the caller, gathered from `Facts` and
/// the connection.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// From `mtls` (`Facts::spiffe_id`).
    pub spiffe_id: Option<&'a str>,
    /// Whether a client certificate was presented at all.
    pub has_cert: bool,
    /// From `jwt` (`Facts::scopes`); empty without a token.
    pub scopes: &'a [String],
}

impl Caller<'_> {
    /// The reason for a SPIFFE refusal: without any certificate the caller
    /// has not authenticated (UNAUTHENTICATED), with one it is not allowed.
    pub(crate) fn identity_reason(&self) -> Reason {
        if self.has_cert {
            Reason::IdentityNotAllowed
        } else {
            Reason::ClientCertMissing
        }
    }
}

/// Pick the first entry `caller` satisfies.
pub(crate) fn pick<'e>(
    route: &str,
    entries: &'e [SelectEntry],
    caller: &Caller<'_>,
) -> Result<&'e SelectEntry, Denial> {
    let mut scope_failed = false;
    for entry in entries {
        let scopes_ok = entry
            .scopes
            .as_ref()
            .is_none_or(|r| r.satisfied_by(caller.scopes));
        let spiffe_ok = entry
            .spiffe
            .as_ref()
            .is_none_or(|l| l.allows(caller.spiffe_id));
        if scopes_ok && spiffe_ok {
            return Ok(entry);
        }
        scope_failed |= !scopes_ok;
    }
    Err(if scope_failed {
        Denial::new(
            Reason::ScopeMissing,
            format!("route {route}: the token lacks the scopes of every upstream"),
        )
    } else {
        Denial::new(
            caller.identity_reason(),
            format!("route {route}: the workload identity is not allowed for any upstream"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_versus_any() {
        let granted = vec!["a".to_owned(), "b".to_owned()];
        assert!(ScopeRule::All(vec!["a".into(), "b".into()]).satisfied_by(&granted));
        assert!(!ScopeRule::All(vec!["a".into(), "c".into()]).satisfied_by(&granted));
        assert!(ScopeRule::Any(vec!["c".into(), "b".into()]).satisfied_by(&granted));
        assert!(!ScopeRule::Any(vec!["c".into(), "d".into()]).satisfied_by(&granted));
        assert!(!ScopeRule::Any(vec!["a".into()]).satisfied_by(&[]));
    }
}
