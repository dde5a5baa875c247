//! The `ratelimit` filter: every rule that applies counts the request.

use std::borrow::Cow;
use std::time::Duration;

use ztgate_filter::{Decision, Denial, Facts, Filter, Reason, RequestView};

use crate::raw::Key;
use crate::rule::{Count, Rule};

/// Separates the rule name from the wait in a `rate_limited` message; see
/// [`retry_after`].
const RETRY_MARKER: &str = "; retry after ";

/// The `ratelimit` request filter of one config generation. Counters live
/// in the filter: a config reload starts every window afresh.
pub struct RateLimitFilter {
    rules: Vec<Rule>,
}

impl RateLimitFilter {
    pub(crate) fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    /// Count the request against every rule that applies and refuse it when
    /// any is over its limit. A rule applies when its `route` (if any) is the
    /// selected route and the request carries the rule's identity: a request
    /// without a subject (or SPIFFE ID, fingerprint, client IP) is not
    /// limited by a rule keyed on it; limiting anonymous callers is the job
    /// of the filters that require an identity, or of a `client_ip` rule.
    pub fn decide(&self, req: &RequestView<'_>, facts: &Facts) -> Decision {
        // The longest wait among exceeded rules: retrying sooner would be
        // refused by that rule anyway.
        let mut exceeded: Option<(&Rule, Duration)> = None;
        for rule in &self.rules {
            if let Some(want) = &rule.route {
                if facts.route.as_ref().is_none_or(|r| r.route != *want) {
                    continue;
                }
            }
            let count = match rule.key {
                Key::Subject => facts.token.as_ref().and_then(|t| {
                    // `sub` is unique per issuer only (OIDC Core §2).
                    t.subject
                        .as_deref()
                        .map(|s| rule.count(&(t.issuer.as_ref(), s)))
                }),
                Key::SpiffeId => facts.spiffe_id().map(|id| rule.count(&id)),
                Key::Fingerprint => facts.fingerprint().map(|fp| rule.count(&fp)),
                Key::ClientIp => req.client_ip.map(|ip| rule.count(&ip)),
            };
            if let Some(Count::Exceeded(wait)) = count {
                if exceeded.is_none_or(|(_, w)| wait > w) {
                    exceeded = Some((rule, wait));
                }
            }
        }
        match exceeded {
            None => Decision::Continue,
            Some((rule, wait)) => Decision::deny(
                Reason::RateLimited,
                format!(
                    "rate limit {} exceeded{RETRY_MARKER}{}s",
                    rule.name,
                    retry_after_secs(wait)
                ),
            ),
        }
    }
}

/// Whole seconds to wait, rounded up, at least 1 (`retry-after` is in
/// seconds, and 0 would invite an immediate retry that is refused again).
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// How long a caller refused by this filter should wait: the value for the
/// `retry-after` response header. `None` for any other denial.
///
/// The gateway calls this on the chain's denial; the wait travels in the
/// denial's message (`rate limit NAME exceeded; retry after Ns`), which is
/// also what the caller reads in `grpc-message`.
pub fn retry_after(denial: &Denial) -> Option<Duration> {
    if denial.reason != Reason::RateLimited {
        return None;
    }
    let msg: &Cow<'static, str> = &denial.message;
    let (_, tail) = msg.rsplit_once(RETRY_MARKER)?;
    let secs: u64 = tail.strip_suffix('s')?.parse().ok()?;
    Some(Duration::from_secs(secs))
}

impl std::fmt::Debug for RateLimitFilter {
    /// Rule names only: the counters are large and say nothing useful.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitFilter")
            .field(
                "rules",
                &self.rules.iter().map(|r| &*r.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[async_trait::async_trait]
impl Filter for RateLimitFilter {
    fn name(&self) -> &'static str {
        "ratelimit"
    }

    async fn evaluate(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision {
        self.decide(req, facts)
    }
}
