//! The `ratelimit` filter: every rule that applies counts the request.
//!
//! With `state.backend: redis` a rule counts in the store every replica
//! shares, so a limit of N is N for the whole deployment, not N per
//! replica. The count is deferred to the chain, which sends it together
//! with the other filters' shared-state checks in one round trip
//! ([`ztgate_filter::deferred`]). An identity the store has said is over
//! its limit is refused locally until its window ends. If the store has no
//! answer, `on_unavailable: allow` (the default) counts in this replica's
//! limiter instead, and `deny` refuses with `state_unavailable`.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ztgate_filter::{
    Decision, Deferred, Denial, Facts, Filter, Pending, Reason, RequestView, SharedState,
    StateAnswer, StateOp, StateUse, Unavailable,
};

use crate::config::Key;
use crate::rule::{Count, Rule};

/// The `ratelimit` request filter of one config generation. Its counters
/// are claimed from the gateway's memory and carry over reloads.
pub struct RateLimitFilter {
    rules: Vec<Rule>,
    shared: Option<SharedState>,
}

/// Whose requests a rule counts.
#[derive(Hash)]
enum Identity<'a> {
    /// `sub` is unique per issuer only (OIDC Core §2).
    Subject(&'a str, &'a str),
    SpiffeId(&'a str),
    Fingerprint(&'a str),
    ClientIp(IpAddr),
}

impl Identity<'_> {
    /// The identity as part of a shared-store key.
    fn key(&self) -> String {
        match self {
            Identity::Subject(iss, sub) => format!("sub:{iss}\u{0}{sub}"),
            Identity::SpiffeId(id) => format!("spiffe:{id}"),
            Identity::Fingerprint(fp) => format!("fp:{fp}"),
            Identity::ClientIp(ip) => format!("ip:{ip}"),
        }
    }
}

impl RateLimitFilter {
    pub(crate) fn new(rules: Vec<Rule>, shared: Option<SharedState>) -> Self {
        Self { rules, shared }
    }

    /// Count the request against every rule that applies and refuse it when
    /// any is over its limit. A rule applies when its `route` (if any) is the
    /// selected route and the request carries the rule's identity: a request
    /// without a subject (or SPIFFE ID, fingerprint, client IP) is not
    /// limited by a rule keyed on it; limiting anonymous callers is the job
    /// of the filters that require an identity, or of a `client_ip` rule.
    pub async fn decide(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision {
        // The longest wait among exceeded rules: retrying sooner would be
        // refused by that rule anyway.
        let mut exceeded: Option<(&Rule, Duration)> = None;
        for rule in &self.rules {
            if let Some(want) = &rule.route {
                if facts.route().is_none_or(|r| *r.route() != *want) {
                    continue;
                }
            }
            let identity = match rule.key {
                Key::Subject => facts.token().and_then(|t| {
                    t.subject()
                        .map(|s| Identity::Subject(t.issuer().as_ref(), s))
                }),
                Key::SpiffeId => facts.spiffe_id().map(Identity::SpiffeId),
                Key::Fingerprint => facts.fingerprint().map(Identity::Fingerprint),
                Key::ClientIp => req.client_ip.map(Identity::ClientIp),
            };
            let Some(identity) = identity else { continue };
            let count = match &self.shared {
                None => rule.count(&identity, req.now),
                Some(shared) => {
                    let id = identity.key();
                    match count_shared(shared, rule, id, req.now, &mut facts.pending) {
                        Some(c) => c,
                        None => continue,
                    }
                }
            };
            if let Count::Exceeded(wait) = count {
                if exceeded.is_none_or(|(_, w)| wait > w) {
                    exceeded = Some((rule, wait));
                }
            }
        }
        match exceeded {
            None => Decision::Continue,
            Some((rule, wait)) => self::exceeded(rule, wait),
        }
    }
}

/// Count in the shared store: deferred to the chain (one round trip with
/// the request's other checks), unless the identity is already known to be
/// over the limit, which is answered here without a round trip.
fn count_shared(
    shared: &SharedState,
    rule: &Rule,
    id: String,
    now: SystemTime,
    pending: &mut Pending,
) -> Option<Count> {
    if let Some(wait) = rule.known_over(&id, now) {
        return Some(Count::Exceeded(wait));
    }
    let key = format!("ratelimit:{}:{}:{id}", rule.name, rule.interval.as_millis());
    let on_unavailable = shared.on_unavailable(StateUse::RateLimit);
    let rule = rule.clone();
    pending.push(Deferred {
        used_by: StateUse::RateLimit,
        op: StateOp::Hit {
            key,
            window: rule.interval,
        },
        settle: Box::new(move |answer| {
            let count = match answer {
                Ok(StateAnswer::Hit(hit)) if hit.count <= rule.limit() => Count::Allowed,
                Ok(StateAnswer::Hit(hit)) => {
                    rule.mark_over(&id, now, hit.resets_in);
                    Count::Exceeded(hit.resets_in)
                }
                other => {
                    if let Err(e) = other {
                        tracing::debug!(error = %e, rule = %rule.name, "rate limit: shared store has no answer");
                    }
                    match on_unavailable {
                        Unavailable::Allow => rule.count(&id, now),
                        Unavailable::Deny => {
                            return Decision::Deny(Denial::new(
                                Reason::StateUnavailable,
                                "rate limit cannot be counted (state store unavailable)",
                            ))
                        }
                    }
                }
            };
            match count {
                Count::Allowed => Decision::Continue,
                Count::Exceeded(wait) => exceeded(&rule, wait),
            }
        }),
    });
    None
}

/// The denial for a rule over its limit.
fn exceeded(rule: &Rule, wait: Duration) -> Decision {
    let secs = retry_after_secs(wait);
    Decision::Deny(
        Denial::new(
            Reason::RateLimited,
            format!("rate limit {} exceeded; retry after {secs}s", rule.name),
        )
        .retry_after(Duration::from_secs(secs)),
    )
}

/// Whole seconds to wait, rounded up, at least 1 (`retry-after` is in
/// seconds, and 0 would invite an immediate retry that is refused again).
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
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
        ztgate_filter::FilterKind::Ratelimit.as_str()
    }

    async fn evaluate(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision {
        self.decide(req, facts).await
    }
}
