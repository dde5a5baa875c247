//! The `policy` filter: build the input, evaluate, decide.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ztgate_filter::{Decision, Facts, Filter, FilterKind, Reason, RequestView};

use crate::engine::{Compiled, EvalError};
use crate::input::{self, InputSpec};
use crate::metrics::{self, RuleCounters};

/// Longest input encoding whose decision is remembered: the documents of
/// real requests are a few hundred bytes; one carrying a huge header or
/// claim is evaluated every time rather than allowed to fill the cache.
const MAX_CACHED_KEY: usize = 4096;

thread_local! {
    /// The decision-cache key of the request being decided on this
    /// thread: reused, so a lookup allocates nothing.
    static KEY: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// One decision rule compiled, with its counters and remembered decisions.
pub(crate) struct Rule {
    pub(crate) compiled: Compiled,
    counters: RuleCounters,
    /// Input encoding ([`input::key`]) → decision, when caching is on.
    /// Part of the generation: a Rego or data change starts empty.
    cache: Option<quick_cache::sync::Cache<Box<[u8]>, Decision>>,
    /// Why decisions are not cached, when they are not.
    uncached: Option<String>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("compiled", &self.compiled)
            .field("cached", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl Rule {
    /// `capacity` 0 or an `impure` builtin (see
    /// [`crate::engine::Sources::impure_builtin`]) turns the cache off.
    pub(crate) fn new(compiled: Compiled, capacity: usize, impure: Option<&str>) -> Self {
        let counters = RuleCounters::new(compiled.decision());
        let uncached = match (capacity, impure) {
            (0, _) => Some("decision_cache: 0".to_owned()),
            (_, Some(b)) => Some(format!("the policy calls `{b}`")),
            _ => None,
        };
        let cache = uncached
            .is_none()
            .then(|| quick_cache::sync::Cache::new(capacity));
        Self {
            compiled,
            counters,
            cache,
            uncached,
        }
    }

    /// How this rule's decisions are made, for `explain`.
    fn describe(&self) -> String {
        match &self.uncached {
            None => format!("{}, decisions cached by input", self.compiled.evaluator()),
            Some(why) => format!(
                "{}, decisions not cached ({why})",
                self.compiled.evaluator()
            ),
        }
    }
}

/// Whether a decision may be remembered: allows and the policy's denials
/// are functions of the input; a `policy_error` may be a budget overrun
/// on a loaded machine and is evaluated again next time.
pub(crate) fn cacheable(d: &Decision) -> bool {
    match d {
        Decision::Continue => true,
        Decision::Deny(x) | Decision::ShadowDeny(x) => x.reason != Reason::PolicyError,
    }
}

/// The `policy` request filter of one config generation: the Rego compiled
/// once per decision rule, evaluated per request.
#[derive(Debug)]
pub struct PolicyFilter {
    /// The section's `decision`.
    default: Arc<Rule>,
    /// Routes with their own `routes[].policy.decision`, by route name;
    /// routes naming the same rule share it. Empty in the common case, so
    /// a request then pays no lookup.
    by_route: HashMap<String, Arc<Rule>>,
    spec: InputSpec,
    /// The Rego and data files, for the reloader.
    files: Vec<PathBuf>,
}

/// What `ztgate explain` shows of one evaluation.
#[derive(Debug, Clone)]
pub struct Explained {
    /// The input document, as JSON.
    pub input: serde_json::Value,
    /// The decision rule's value as JSON (`null` when undefined), or why
    /// the evaluation failed.
    pub answer: Result<serde_json::Value, String>,
    pub decision: Decision,
    /// The rule evaluated (the route's own, or the section's).
    pub rule: String,
    /// Which evaluator ran it (the VM, or the interpreter and why).
    pub evaluator: String,
}

impl PolicyFilter {
    pub(crate) fn new(
        default: Arc<Rule>,
        by_route: HashMap<String, Arc<Rule>>,
        spec: InputSpec,
        files: Vec<PathBuf>,
    ) -> Self {
        Self {
            default,
            by_route,
            spec,
            files,
        }
    }

    /// The section's compiled decision rule (for benchmarks and tests).
    pub fn compiled(&self) -> &Compiled {
        &self.default.compiled
    }

    /// The rule that decides this request: its route's, or the section's.
    fn rule(&self, facts: &Facts) -> &Rule {
        if self.by_route.is_empty() {
            return &self.default;
        }
        facts
            .route()
            .and_then(|r| self.by_route.get(&**r.route()))
            .unwrap_or(&self.default)
    }

    /// The whole decision for one request: remembered for an input seen
    /// before, evaluated otherwise.
    pub fn decide(&self, req: &RequestView<'_>, facts: &Facts) -> Decision {
        let rule = self.rule(facts);
        let Some(cache) = &rule.cache else {
            return self.evaluate(rule, req, facts);
        };
        KEY.with_borrow_mut(|key| {
            input::key(&self.spec, req, facts, key);
            if key.len() > MAX_CACHED_KEY {
                return self.evaluate(rule, req, facts);
            }
            if let Some(d) = cache.get(key.as_slice()) {
                metrics::cache(true);
                rule.counters.count(&d);
                return d;
            }
            metrics::cache(false);
            let d = self.evaluate(rule, req, facts);
            if cacheable(&d) {
                cache.insert(key.as_slice().into(), d.clone());
            }
            d
        })
    }

    /// Evaluate `rule` for one request.
    fn evaluate(&self, rule: &Rule, req: &RequestView<'_>, facts: &Facts) -> Decision {
        let answer = rule.compiled.eval(input::build(&self.spec, req, facts));
        if let Err(e) = &answer {
            // The caller is told only `policy_error`; the operator needs the why.
            tracing::warn!(request_id = %facts.request_id, rule = rule.compiled.decision(), error = %e, "policy gave no decision");
        }
        let decision = crate::decision::decide(&answer);
        rule.counters.count(&decision);
        decision
    }

    /// The same evaluation as [`PolicyFilter::decide`], with the input and
    /// the policy's raw answer, for `ztgate explain`.
    pub fn explain(&self, req: &RequestView<'_>, facts: &Facts) -> Explained {
        let rule = self.rule(facts);
        let described = rule.describe();
        let rule = &rule.compiled;
        let input = input::build(&self.spec, req, facts);
        let input_json = serde_json::to_value(&input).unwrap_or_default();
        let answer = rule.eval(input);
        let decision = crate::decision::decide(&answer);
        let answer = match answer {
            Ok(regorus::Value::Undefined) => Ok(serde_json::Value::Null),
            Ok(v) => Ok(serde_json::to_value(&v).unwrap_or_default()),
            Err(e @ (EvalError::OverBudget | EvalError::Failed(_))) => Err(e.to_string()),
        };
        Explained {
            input: input_json,
            answer,
            decision,
            rule: rule.decision().to_owned(),
            evaluator: described,
        }
    }
}

#[async_trait::async_trait]
impl Filter for PolicyFilter {
    fn name(&self) -> &'static str {
        FilterKind::Policy.as_str()
    }

    async fn evaluate(&self, req: &RequestView<'_>, facts: &mut Facts) -> Decision {
        self.decide(req, facts)
    }

    /// A Rego or data file changed on disk reloads the config: the new
    /// generation compiles it, or, when it does not compile, the old one
    /// keeps serving.
    fn watched_files(&self) -> Vec<PathBuf> {
        self.files.clone()
    }
}
