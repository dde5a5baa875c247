//! Counted runs: exactly `warmup_calls` calls, then rounds of exactly
//! `calls` calls with a hook before and after each round (the callgrind
//! mode switches instrumentation on and off there, see [`crate::callgrind`]).
//!
//! A time window cannot give a deterministic measure: how many calls fall
//! into it depends on the machine. A fixed number of calls between two
//! synchronous hooks can: the proxy does the same work for them whatever
//! else runs, so its instruction count divided by the calls is a figure two
//! runs (and two commits) can be compared on. The calls keep the loaded
//! run's shape: `connections × streams` workers in closed loop, each taking
//! a ticket from one shared counter, so exactly `calls` are sent per round.
//! Any call that fails makes its round invalid; it is counted, never retried
//! (a retry would add the failure's cost to the measure).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use serde::{Deserialize, Serialize};

use crate::conn::Endpoint;
use crate::engine::{self, CallError, EngineError, Template, Workload};
use crate::token::TokenSource;

/// How many calls, in how many rounds.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Calls before the first round (not measured: caches, pools and the
    /// proxy's lazily built state settle).
    pub warmup_calls: u64,
    /// Calls per measured round.
    pub calls: u64,
    /// Measured rounds on the same connections.
    pub rounds: u32,
}

/// What happens around each measured round; both run synchronously while no
/// call is in flight.
pub trait Hooks {
    /// Called once every warm-up call (or the previous round) has finished.
    fn before(&mut self, round: u32) -> Result<(), String>;
    /// Called once every call of the round has finished; what it returns is
    /// kept with the round.
    fn after(&mut self, round: u32) -> Result<Option<Measured>, String>;
}

/// What the `after` hook measured over a round.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Measured {
    /// The callgrind dump of the round.
    pub dump: String,
    /// Instructions executed (all the proxy's threads, user space).
    pub total_ir: u64,
    /// `total_ir` ÷ the round's calls.
    pub ir_per_call: f64,
}

/// Hooks that do nothing (a counted run without a profiler).
pub struct NoHooks;

impl Hooks for NoHooks {
    fn before(&mut self, _: u32) -> Result<(), String> {
        Ok(())
    }
    fn after(&mut self, _: u32) -> Result<Option<Measured>, String> {
        Ok(None)
    }
}

/// Calls made in one phase (warm-up or one round).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Phase {
    /// Calls sent (always the planned number).
    pub calls: u64,
    pub ok: u64,
    /// Failed calls by gRPC code name (or `HTTP_<n>`, `TRANSPORT`, `TIMEOUT`…).
    pub errors: BTreeMap<String, u64>,
    pub wall_s: f64,
}

impl Phase {
    /// Every call succeeded.
    pub fn valid(&self) -> bool {
        self.ok == self.calls && self.errors.is_empty()
    }
}

/// One measured round.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Round {
    #[serde(flatten)]
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<Measured>,
}

/// Everything a counted run did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CountOutcome {
    pub warmup: Phase,
    pub rounds: Vec<Round>,
}

impl CountOutcome {
    /// Why the result cannot be used, if it cannot: a failed call in any
    /// phase, or a round the hook measured nothing for.
    pub fn invalid_reason(&self) -> Option<String> {
        let mut why = Vec::new();
        if !self.warmup.valid() {
            why.push(format!(
                "warm-up: {} of {} calls failed {:?}",
                self.warmup.calls - self.warmup.ok,
                self.warmup.calls,
                self.warmup.errors
            ));
        }
        for (i, r) in self.rounds.iter().enumerate() {
            if !r.phase.valid() {
                why.push(format!(
                    "round {}: {} of {} calls failed {:?}",
                    i + 1,
                    r.phase.calls - r.phase.ok,
                    r.phase.calls,
                    r.phase.errors
                ));
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// A counted run as `ztgate-loadgen count --out` writes it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CountResult {
    /// Target label (`ztgate-full`, `haproxy-jwt`, …).
    pub target: String,
    /// `none`, `file`, `file+DPoP`, `minted-RS256`, …
    pub token: String,
    pub method: String,
    pub payload: usize,
    pub connections: usize,
    pub streams: usize,
    pub warmup_calls: u64,
    /// Calls per round.
    pub calls: u64,
    /// The valgrind'd proxy, when instrumentation was switched.
    pub callgrind_pid: Option<u32>,
    /// Calls that reused a pool token (pool smaller than the run).
    #[serde(default)]
    pub token_reuses: u64,
    /// Why the figures cannot be used (a failed call), if so.
    pub invalid: Option<String>,
    #[serde(flatten)]
    pub outcome: CountOutcome,
}

/// Why a counted run stopped.
#[derive(Debug, thiserror::Error)]
pub enum CountError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("round {round}: the hook before it failed: {reason}")]
    Before { round: u32, reason: String },
    #[error("round {round}: the hook after it failed: {reason}")]
    After { round: u32, reason: String },
    #[error("worker failed: {0}")]
    Worker(String),
}

/// Take one call's ticket; `false` once the phase's calls are all taken.
fn take(left: &AtomicU64) -> bool {
    left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// Exactly `calls` calls over every connection's `streams` workers.
async fn phase(
    conns: &[SendRequest<Bytes>],
    streams: usize,
    t: &Arc<Template>,
    tokens: &TokenSource,
    calls: u64,
    call_timeout: Duration,
) -> Result<Phase, CountError> {
    let left = Arc::new(AtomicU64::new(calls));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(conns.len() * streams);
    for send in conns {
        for _ in 0..streams {
            let (mut send, t, tokens, left) =
                (send.clone(), t.clone(), tokens.clone(), left.clone());
            handles.push(tokio::spawn(async move {
                let mut p = Phase::default();
                while take(&left) {
                    p.calls += 1;
                    let key = match tokio::time::timeout(
                        call_timeout,
                        engine::call(&mut send, &t, &tokens),
                    )
                    .await
                    {
                        Ok(Ok(_)) => {
                            p.ok += 1;
                            continue;
                        }
                        Ok(Err(e)) => e.key(),
                        Err(_) => CallError::Timeout.key(),
                    };
                    *p.errors.entry(key).or_default() += 1;
                }
                p
            }));
        }
    }
    let mut total = Phase::default();
    for h in handles {
        let p = h.await.map_err(|e| CountError::Worker(e.to_string()))?;
        total.calls += p.calls;
        total.ok += p.ok;
        for (k, v) in p.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    total.wall_s = started.elapsed().as_secs_f64();
    Ok(total)
}

/// Run the plan against `ep` (inside a tokio runtime): warm-up, then each
/// round between `hooks.before` and `hooks.after`. `w.connections` ×
/// `w.streams` workers; its time fields are not used.
pub async fn run(
    ep: Endpoint,
    w: &Workload,
    tokens: TokenSource,
    plan: Plan,
    hooks: &mut dyn Hooks,
) -> Result<CountOutcome, CountError> {
    let ep = Arc::new(ep);
    let t = Arc::new(Template::new(&ep, w)?);
    let conns = engine::connect_all(&ep, w.connections.max(1)).await?;
    let streams = w.streams.max(1);
    let warmup = phase(
        &conns,
        streams,
        &t,
        &tokens,
        plan.warmup_calls,
        w.call_timeout,
    )
    .await?;
    let mut out = CountOutcome {
        warmup,
        rounds: Vec::new(),
    };
    for round in 1..=plan.rounds.max(1) {
        hooks
            .before(round)
            .map_err(|reason| CountError::Before { round, reason })?;
        let p = phase(&conns, streams, &t, &tokens, plan.calls, w.call_timeout).await?;
        let measured = hooks
            .after(round)
            .map_err(|reason| CountError::After { round, reason })?;
        out.rounds.push(Round { phase: p, measured });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_run_out_exactly() {
        let left = AtomicU64::new(3);
        assert!(take(&left) && take(&left) && take(&left));
        assert!(!take(&left));
        assert!(!take(&left), "never wraps below zero");
    }

    #[test]
    fn a_failed_call_makes_the_outcome_invalid() {
        let good = Phase {
            calls: 10,
            ok: 10,
            ..Phase::default()
        };
        let mut o = CountOutcome {
            warmup: good.clone(),
            rounds: vec![Round {
                phase: good.clone(),
                measured: None,
            }],
        };
        assert_eq!(o.invalid_reason(), None);
        o.rounds.push(Round {
            phase: Phase {
                calls: 10,
                ok: 9,
                errors: [("UNAUTHENTICATED".to_string(), 1)].into(),
                wall_s: 0.0,
            },
            measured: None,
        });
        let why = o.invalid_reason().unwrap_or_default();
        assert!(why.contains("round 2: 1 of 10 calls failed"), "{why}");
        assert!(why.contains("UNAUTHENTICATED"), "{why}");
    }
}
