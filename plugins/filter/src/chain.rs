//! The pipeline runner: filters in `pipeline:` order, modes applied in one
//! place, each filter timed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::state::{StateError, StateOp, StateStore, StateUse};
use crate::{Decision, Denial, Facts, Filter, Mode, RequestView};

/// One filter in the chain with its mode.
pub struct Stage {
    pub filter: Box<dyn Filter>,
    pub mode: Mode,
}

impl Stage {
    pub fn new(filter: Box<dyn Filter>, mode: Mode) -> Self {
        Self { filter, mode }
    }
}

/// What one filter decided, after its mode was applied.
#[derive(Debug, Clone)]
pub struct FilterVerdict {
    pub filter: &'static str,
    pub mode: Mode,
    /// `Deny` only in enforce mode; a shadow filter's denial is `ShadowDeny`.
    pub decision: Decision,
    pub elapsed: Duration,
}

/// The result of running the chain over one request.
#[derive(Debug, Clone, Default)]
pub struct ChainOutcome {
    /// One entry per filter that ran, in order. Filters after an enforced
    /// denial do not run.
    pub verdicts: Vec<FilterVerdict>,
    /// The enforced denial, if any.
    pub denial: Option<Denial>,
}

impl ChainOutcome {
    /// Denials that shadow mode let through (`shadow_deny` in the audit).
    pub fn shadow_denials(&self) -> impl Iterator<Item = (&'static str, &Denial)> {
        self.verdicts.iter().filter_map(|v| match &v.decision {
            Decision::ShadowDeny(d) => Some((v.filter, d)),
            _ => None,
        })
    }
}

/// The ordered filters of one config generation.
#[derive(Default)]
pub struct Chain {
    stages: Vec<Stage>,
    /// Where deferred shared-state checks go ([`crate::deferred`]).
    store: Option<Arc<dyn StateStore>>,
}

impl Chain {
    pub fn new(stages: Vec<Stage>) -> Self {
        Self {
            stages,
            store: None,
        }
    }

    /// The chain with the store that settles deferred checks.
    pub fn with_store(mut self, store: Option<Arc<dyn StateStore>>) -> Self {
        self.store = store;
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.stages.iter().map(|s| s.filter.name())
    }

    /// Every filter's background work ([`Filter::background`]).
    pub fn background(&self) -> Vec<crate::Background> {
        self.stages
            .iter()
            .flat_map(|s| s.filter.background())
            .collect()
    }

    /// Every filter's offline preparation ([`Filter::prepare`]), as
    /// `filter: problem` lines.
    pub async fn prepare(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.stages {
            let name = s.filter.name();
            out.extend(
                s.filter
                    .prepare()
                    .await
                    .into_iter()
                    .map(|p| format!("{name}: {p}")),
            );
        }
        out
    }

    /// Why filters cannot serve yet, as `filter: why` lines (`/readyz`).
    pub fn not_ready(&self) -> Vec<String> {
        self.stages
            .iter()
            .filter_map(|s| {
                s.filter
                    .not_ready()
                    .map(|why| format!("{}: {why}", s.filter.name()))
            })
            .collect()
    }

    /// Every file a filter asks to be watched.
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        self.stages
            .iter()
            .flat_map(|s| s.filter.watched_files())
            .collect()
    }

    /// Run every filter in order until one denies in enforce mode, then
    /// settle what filters deferred ([`crate::deferred`]).
    pub async fn run(&self, req: &RequestView<'_>, facts: &mut Facts) -> ChainOutcome {
        let mut out = ChainOutcome {
            verdicts: Vec::with_capacity(self.stages.len()),
            denial: None,
        };
        for (i, stage) in self.stages.iter().enumerate() {
            if stage.filter.settles_before() && !facts.pending.is_empty() {
                self.settle(facts, &mut out).await;
                if out.denial.is_some() {
                    return out;
                }
            }
            facts.pending.stage = i;
            let started = Instant::now();
            let decision = stage.filter.evaluate(req, facts).await;
            let elapsed = started.elapsed();
            let decision = match (decision, stage.mode) {
                (Decision::Deny(d), Mode::Shadow) => Decision::ShadowDeny(d),
                (d, _) => d,
            };
            let denial = match &decision {
                Decision::Deny(d) => Some(d.clone()),
                _ => None,
            };
            out.verdicts.push(FilterVerdict {
                filter: stage.filter.name(),
                mode: stage.mode,
                decision,
                elapsed,
            });
            if denial.is_some() {
                out.denial = denial;
                break;
            }
        }
        if !facts.pending.is_empty() {
            self.settle(facts, &mut out).await;
        }
        out
    }

    /// Send every pending check in one batch and fold each answer into the
    /// verdict of the stage that deferred it. The first enforced denial in
    /// pipeline order becomes the chain's denial (unless one was already
    /// reached).
    async fn settle(&self, facts: &mut Facts, out: &mut ChainOutcome) {
        let items = std::mem::take(&mut facts.pending.items);
        let ops: Vec<(StateUse, StateOp)> = items
            .iter()
            .map(|(_, d)| (d.used_by, d.op.clone()))
            .collect();
        let started = Instant::now();
        let mut answers = match &self.store {
            Some(store) => store.batch(&ops).await,
            // Filters defer only when a store is configured; be safe anyway.
            None => Vec::new(),
        }
        .into_iter();
        // Split the batch's time evenly among the stages that waited on it.
        let share = started
            .elapsed()
            .checked_div(u32::try_from(items.len()).unwrap_or(u32::MAX))
            .unwrap_or_default();
        let mut first: Option<(usize, Denial)> = None;
        for (stage_index, d) in items {
            let answer = answers
                .next()
                .unwrap_or(Err(StateError::Backend("no answer in the batch".into())));
            let Some(stage) = self.stages.get(stage_index) else {
                continue;
            };
            let decision = match ((d.settle)(answer), stage.mode) {
                (Decision::Deny(d), Mode::Shadow) => Decision::ShadowDeny(d),
                (d, _) => d,
            };
            let name = stage.filter.name();
            let verdict = out.verdicts.iter_mut().find(|v| v.filter == name);
            if let Some(v) = verdict {
                v.elapsed += share;
                // A stage's first refusal stands; a later one adds nothing.
                if v.decision == Decision::Continue {
                    v.decision = decision.clone();
                }
            }
            if let Decision::Deny(denial) = decision {
                if first.as_ref().is_none_or(|(i, _)| stage_index < *i) {
                    first = Some((stage_index, denial));
                }
            }
        }
        if out.denial.is_none() {
            out.denial = first.map(|(_, d)| d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Reason, TlsFacts};
    use http::{HeaderMap, Method};
    use std::time::SystemTime;

    struct Fixed(&'static str, Decision);

    #[async_trait::async_trait]
    impl Filter for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn evaluate(&self, _: &RequestView<'_>, f: &mut Facts) -> Decision {
            f.request_id.push_str(self.0);
            self.1.clone()
        }
    }

    fn view<'a>(h: &'a HeaderMap, t: &'a TlsFacts) -> RequestView<'a> {
        RequestView {
            method: &Method::POST,
            path: "/a.B/C",
            authority: None,
            headers: h,
            tls: t,
            client_ip: None,
            socket_ip: None,
            now: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn runs_in_order_and_stops_at_enforced_denial() {
        let chain = Chain::new(vec![
            Stage::new(Box::new(Fixed("a", Decision::Continue)), Mode::Enforce),
            Stage::new(
                Box::new(Fixed("b", Decision::deny(Reason::ScopeMissing, "no"))),
                Mode::Enforce,
            ),
            Stage::new(Box::new(Fixed("c", Decision::Continue)), Mode::Enforce),
        ]);
        let (h, t) = (HeaderMap::new(), TlsFacts::default());
        let mut facts = Facts::default();
        let out = chain.run(&view(&h, &t), &mut facts).await;
        assert_eq!(facts.request_id, "ab");
        assert_eq!(out.verdicts.len(), 2);
        assert_eq!(out.denial.map(|d| d.reason), Some(Reason::ScopeMissing));
    }

    #[tokio::test]
    async fn shadow_records_but_lets_through() {
        let chain = Chain::new(vec![
            Stage::new(
                Box::new(Fixed("a", Decision::deny(Reason::GeoDenied, "geo"))),
                Mode::Shadow,
            ),
            Stage::new(Box::new(Fixed("b", Decision::Continue)), Mode::Enforce),
        ]);
        let (h, t) = (HeaderMap::new(), TlsFacts::default());
        let mut facts = Facts::default();
        let out = chain.run(&view(&h, &t), &mut facts).await;
        assert!(out.denial.is_none());
        assert_eq!(facts.request_id, "ab");
        let shadow: Vec<_> = out.shadow_denials().collect();
        assert_eq!(shadow.len(), 1);
        assert_eq!(shadow[0].1.reason, Reason::GeoDenied);
    }

    /// A store that answers from a script and records each batch.
    #[derive(Debug, Default)]
    struct Scripted {
        batches: std::sync::Mutex<Vec<usize>>,
    }

    #[async_trait::async_trait]
    impl StateStore for Scripted {
        fn backend(&self) -> &'static str {
            "scripted"
        }
        async fn insert_once(
            &self,
            _: StateUse,
            key: &str,
            _: Duration,
        ) -> Result<bool, StateError> {
            Ok(!key.starts_with("seen"))
        }
        async fn bind(
            &self,
            _: StateUse,
            _: &str,
            _: &str,
            _: Duration,
        ) -> Result<crate::Bind, StateError> {
            Ok(crate::Bind::Bound)
        }
        async fn rebind(&self, _: StateUse, _: &str, _: &str) -> Result<(), StateError> {
            Ok(())
        }
        async fn hit(&self, _: StateUse, _: &str, _: Duration) -> Result<crate::Hit, StateError> {
            Err(StateError::Timeout)
        }
        async fn batch(
            &self,
            ops: &[(StateUse, StateOp)],
        ) -> Vec<Result<crate::StateAnswer, StateError>> {
            self.batches.lock().unwrap().push(ops.len());
            let mut out = Vec::new();
            for (_, op) in ops {
                out.push(match op {
                    StateOp::InsertOnce { key, .. } => {
                        Ok(crate::StateAnswer::Inserted(!key.starts_with("seen")))
                    }
                    StateOp::Hit { .. } => Err(StateError::Timeout),
                });
            }
            out
        }
    }

    /// Defers an insert of `key`; a key already seen is a denial.
    struct Defers(&'static str, &'static str, bool);

    #[async_trait::async_trait]
    impl Filter for Defers {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn evaluate(&self, _: &RequestView<'_>, f: &mut Facts) -> Decision {
            f.pending.push(crate::Deferred {
                used_by: StateUse::Dpop,
                op: StateOp::InsertOnce {
                    key: self.1.into(),
                    ttl: Duration::from_secs(1),
                },
                settle: Box::new(|a| match a {
                    Ok(crate::StateAnswer::Inserted(true)) => Decision::Continue,
                    _ => Decision::deny(Reason::DpopReplay, "seen"),
                }),
            });
            Decision::Continue
        }
        fn settles_before(&self) -> bool {
            self.2
        }
    }

    fn run_with(stages: Vec<Stage>) -> (ChainOutcome, Facts, Arc<Scripted>) {
        let store = Arc::new(Scripted::default());
        let chain = Chain::new(stages).with_store(Some(store.clone() as Arc<dyn StateStore>));
        let (h, t) = (HeaderMap::new(), TlsFacts::default());
        let mut facts = Facts::default();
        let out = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(chain.run(&view(&h, &t), &mut facts));
        (out, facts, store)
    }

    #[test]
    fn deferred_checks_go_in_one_batch_and_the_first_denial_in_order_wins() {
        let (out, facts, store) = run_with(vec![
            Stage::new(Box::new(Defers("a", "fresh", false)), Mode::Enforce),
            Stage::new(Box::new(Defers("b", "seen-1", false)), Mode::Enforce),
            Stage::new(Box::new(Defers("c", "seen-2", false)), Mode::Enforce),
        ]);
        assert_eq!(*store.batches.lock().unwrap(), vec![3]);
        assert!(facts.pending.is_empty());
        assert_eq!(out.verdicts.len(), 3);
        assert_eq!(out.verdicts[0].decision, Decision::Continue);
        assert!(matches!(out.verdicts[1].decision, Decision::Deny(_)));
        assert_eq!(out.denial.map(|d| d.reason), Some(Reason::DpopReplay));
    }

    #[test]
    fn a_shadow_stage_records_its_deferred_denial_only() {
        let (out, _, _) = run_with(vec![Stage::new(
            Box::new(Defers("a", "seen", false)),
            Mode::Shadow,
        )]);
        assert!(out.denial.is_none());
        assert_eq!(out.shadow_denials().count(), 1);
    }

    #[test]
    fn pending_checks_settle_before_a_filter_that_needs_them_settled() {
        let (out, _, store) = run_with(vec![
            Stage::new(Box::new(Defers("a", "seen", false)), Mode::Enforce),
            // Would bind a device: must not run for a refused request.
            Stage::new(Box::new(Defers("binds", "fresh", true)), Mode::Enforce),
        ]);
        assert_eq!(*store.batches.lock().unwrap(), vec![1]);
        assert_eq!(out.verdicts.len(), 1, "the binding filter never ran");
        assert_eq!(out.denial.map(|d| d.reason), Some(Reason::DpopReplay));
    }
}
