//! The compiled policy of one generation and its evaluation.
//!
//! # Cost per call
//!
//! A regorus [`Engine`] is parsed, compiled and loaded with data once, at
//! build time. Evaluating needs `&mut Engine` (it keeps per-evaluation
//! scratch state), so calls on different threads cannot share one. Cloning
//! the prepared engine per call is correct but costs a copy of its
//! interpreter state on every request; instead engines are kept in a small
//! pool: a call takes one (cloning the prepared template only when the pool
//! is empty, i.e. at most once per concurrent caller), evaluates, and gives
//! it back. regorus resets an engine's evaluation state at the start of
//! every `eval_rule` (`clean_internal_evaluation_state`), so nothing of one
//! request's input or rule values reaches the next. The benchmark
//! (`benches/policy.rs`) measures both ways.
//!
//! # Budget
//!
//! regorus' interpreter has a cooperative execution timer: it counts work
//! units (statements, expressions) and reads the clock every
//! [`CHECK_INTERVAL`] of them, failing the evaluation once the elapsed time
//! is over the limit. That bounds a policy that loops over large data or
//! recurses deeply; a single builtin call (one regex match) is bounded by
//! regorus' own regex size limit.

use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use regorus::utils::limits::{ExecutionTimerConfig, LimitError};
use regorus::{Engine, Value};

/// Work units between two clock reads: often enough that a runaway
/// policy is stopped within a few microseconds of its budget, rarely
/// enough that a 20-rule policy reads the clock a handful of times.
pub const CHECK_INTERVAL: u32 = 32;

/// Most idle engines kept: one per concurrent caller is all a pool
/// needs; more would only hold memory after a burst.
const POOL_MAX: usize = 64;

/// Why an evaluation gave no decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// Over the time budget.
    OverBudget,
    /// The policy failed at run time (a conflict, a builtin error), or
    /// regorus itself did (a panic is caught and reported here).
    Failed(String),
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::OverBudget => f.write_str("policy evaluation over its time budget"),
            EvalError::Failed(e) => write!(f, "policy evaluation failed: {e}"),
        }
    }
}

/// Why a policy could not be compiled or loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// Which of the configured files (`None`: the policy as a whole).
    pub file: Option<PathBuf>,
    /// What regorus said, first line only (`FILE:LINE:COL: error: …`).
    pub message: String,
}

/// A policy compiled once per generation.
pub struct Compiled {
    /// Policies parsed and data loaded: what every pooled engine is a clone of.
    template: Engine,
    /// The rule path whose value is the decision.
    decision: String,
    pool: Mutex<Vec<Engine>>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

/// An error in one line. regorus prints a source error over several:
/// `--> FILE:LINE:COL`, the source line with a caret, `error: MESSAGE`;
/// a `check` line and a log line want `FILE:LINE:COL: error: MESSAGE`.
fn first_line(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let location = text.lines().find_map(|l| l.trim().strip_prefix("--> "));
    let message = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("error:"));
    match (location, message) {
        (Some(at), Some(message)) => format!("{at}: {message}"),
        _ => lines.next().unwrap_or("").to_owned(),
    }
}

impl Compiled {
    /// Parse `rego` sources and merge `data` documents, each given as
    /// (path, text); check that `decision` names a rule.
    pub fn load(
        rego: &[(PathBuf, String)],
        data: &[(PathBuf, String)],
        decision: &str,
        budget: Duration,
    ) -> Result<Compiled, LoadError> {
        let mut engine = Engine::new();
        for (path, text) in rego {
            engine
                .add_policy(path.display().to_string(), text.clone())
                .map_err(|e| LoadError {
                    file: Some(path.clone()),
                    message: first_line(&e),
                })?;
        }
        for (path, text) in data {
            let err = |e: &dyn std::fmt::Display| LoadError {
                file: Some(path.clone()),
                message: first_line(&e),
            };
            let value = Value::from_json_str(text).map_err(|e| err(&e))?;
            if value.as_object().is_err() {
                return Err(err(&"a data file must hold a JSON object"));
            }
            engine.add_data(value).map_err(|e| err(&e))?;
        }
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: budget,
            check_interval: NonZeroU32::new(CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
        });
        // Evaluate once with an empty input: compiles the modules now (so
        // the first request does not pay for it) and refuses a `decision`
        // that names no rule, which would otherwise deny every call with
        // `policy_error`. An empty input may legitimately make the rule
        // fail at run time; only "no such rule" is a load error.
        engine.set_input(Value::new_object());
        if let Err(e) = engine.eval_rule(decision.to_owned()) {
            let message = first_line(&e);
            if !is_runtime_error(&e) {
                return Err(LoadError {
                    file: None,
                    message: format!("decision `{decision}`: {message}"),
                });
            }
        }
        Ok(Compiled {
            template: engine,
            decision: decision.to_owned(),
            pool: Mutex::new(Vec::new()),
        })
    }

    /// Read `rego` and `data` files and [`Compiled::load`] them.
    pub fn from_files(
        rego: &[PathBuf],
        data: &[PathBuf],
        decision: &str,
        budget: Duration,
    ) -> Result<Compiled, LoadError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|t| (p.to_path_buf(), t))
                .map_err(|e| LoadError {
                    file: Some(p.to_path_buf()),
                    message: format!("cannot read: {e}"),
                })
        };
        let rego = rego
            .iter()
            .map(|p| read(p))
            .collect::<Result<Vec<_>, _>>()?;
        let data = data
            .iter()
            .map(|p| read(p))
            .collect::<Result<Vec<_>, _>>()?;
        Self::load(&rego, &data, decision, budget)
    }

    /// Evaluate the decision rule over `input`. `Value::Undefined` means
    /// no rule body matched and there is no default.
    pub fn eval(&self, input: Value) -> Result<Value, EvalError> {
        let pooled = self.pool.lock().pop();
        let mut engine = pooled.unwrap_or_else(|| self.template.clone());
        self.eval_on(&mut engine, input).inspect(|_| {
            let mut pool = self.pool.lock();
            if pool.len() < POOL_MAX {
                pool.push(engine);
            }
        })
    }

    /// Evaluate on a fresh clone of the prepared engine (the benchmark's
    /// comparison for the pool).
    pub fn eval_cloned(&self, input: Value) -> Result<Value, EvalError> {
        let mut engine = self.template.clone();
        self.eval_on(&mut engine, input)
    }

    fn eval_on(&self, engine: &mut Engine, input: Value) -> Result<Value, EvalError> {
        engine.set_input(input);
        // regorus is not known to panic on any input, but a panic here
        // would take the request's task down: it is caught and refused
        // like any failure, and the engine (maybe half-updated) dropped.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| engine.eval_rule(self.decision.clone())));
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if is_over_budget(&e) => Err(EvalError::OverBudget),
            Ok(Err(e)) => Err(EvalError::Failed(first_line(&e))),
            Err(_) => Err(EvalError::Failed("the evaluator panicked".into())),
        }
    }
}

// regorus reports errors as `anyhow::Error`; anyhow is used here only to
// read them.
fn is_over_budget(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<LimitError>(),
            Some(LimitError::TimeLimitExceeded { .. })
        )
    }) || e.to_string().contains("time limit")
}

/// Whether a failure of the load-time probe is the policy failing at run
/// time on an empty input (fine) rather than the decision naming no rule.
fn is_runtime_error(e: &anyhow::Error) -> bool {
    let text = e.to_string();
    !text.contains("not a valid rule path")
}
