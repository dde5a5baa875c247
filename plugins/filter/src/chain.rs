//! The pipeline runner: filters in `pipeline:` order, modes applied in one
//! place, each filter timed.

use std::time::{Duration, Instant};

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
}

impl Chain {
    pub fn new(stages: Vec<Stage>) -> Self {
        Self { stages }
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

    /// Run every filter in order until one denies in enforce mode.
    pub async fn run(&self, req: &RequestView<'_>, facts: &mut Facts) -> ChainOutcome {
        let mut out = ChainOutcome {
            verdicts: Vec::with_capacity(self.stages.len()),
            denial: None,
        };
        for stage in &self.stages {
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
        out
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
}
