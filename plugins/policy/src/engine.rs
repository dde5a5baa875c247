//! The compiled policy of one generation and its evaluation.
//!
//! # Two evaluators
//!
//! The Rego is parsed, checked and loaded with its data once per
//! generation. It is then compiled to regorus' bytecode VM (RVM), which
//! runs the 20-rule benchmark policy in about 7 µs where the tree-walking
//! interpreter takes about 52 µs (`benches/policy.rs`), and whose
//! instruction count bounds a policy deterministically. A policy that the
//! RVM compiler does not take (regorus 0.14 lacks `with` and some partial
//! object rules there) runs on the interpreter instead; `ztgate explain`
//! says which.
//!
//! Evaluating needs `&mut` state, so calls on different threads cannot
//! share one VM or engine: each evaluator keeps a small pool, a call takes
//! one (making one only when the pool is empty, i.e. at most once per
//! concurrent caller), evaluates, and gives it back. Both reset their
//! evaluation state at the start of every run (the VM's
//! `execute_run_to_completion`, the interpreter's
//! `clean_internal_evaluation_state`), so nothing of one request's input or
//! rule values reaches the next; a unit test holds them to it.
//!
//! # Budget
//!
//! Two bounds, whichever comes first: `max_instructions` (the VM counts
//! each instruction; deterministic, whatever the machine's load) and
//! `budget`, a time limit checked cooperatively by both evaluators every
//! [`CHECK_INTERVAL`] work units. Over either, the evaluation fails and the
//! request is refused with `policy_error`. A single builtin call (one
//! regex match) is bounded by regorus' own regex size limit.

use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use parking_lot::Mutex;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::{RegoVM, VmError};
use regorus::rvm::Program;
use regorus::utils::limits::{ExecutionTimerConfig, LimitError};
use regorus::{CompiledPolicy, Engine, Value};

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

/// How long one evaluation may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget of one evaluation.
    pub budget: Duration,
    /// Most bytecode instructions one evaluation may execute (VM only).
    pub max_instructions: usize,
}

impl Limits {
    fn timer(self) -> ExecutionTimerConfig {
        ExecutionTimerConfig {
            limit: self.budget,
            check_interval: NonZeroU32::new(CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// The policy compiled to bytecode, with what makes a VM for it.
struct Vm {
    program: Arc<Program>,
    /// Kept for the VM's `default` rule values.
    policy: CompiledPolicy,
    data: Value,
    pool: Mutex<Vec<RegoVM>>,
}

/// A policy compiled once per generation.
pub struct Compiled {
    /// Policies parsed and data loaded: what every pooled interpreter is a
    /// clone of.
    template: Engine,
    /// The rule path whose value is the decision.
    decision: String,
    limits: Limits,
    /// `None`: the RVM compiler did not take the policy; the interpreter runs it.
    vm: Option<Vm>,
    /// Why the VM is not used, when it is not.
    vm_refused: Option<String>,
    pool: Mutex<Vec<Engine>>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("decision", &self.decision)
            .field("evaluator", &self.evaluator())
            .finish_non_exhaustive()
    }
}

/// The Rego modules and data documents of a policy, read once, each as
/// (path, text): what every decision rule of one generation (the
/// section's and each route's) is compiled from.
#[derive(Debug, Clone)]
pub struct Sources {
    rego: Vec<(PathBuf, String)>,
    data: Vec<(PathBuf, String)>,
}

impl Sources {
    /// Read every file; the first that cannot be read is the error.
    pub fn read(rego: &[PathBuf], data: &[PathBuf]) -> Result<Sources, LoadError> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map(|t| (p.clone(), t))
                .map_err(|e| LoadError {
                    file: Some(p.clone()),
                    message: format!("cannot read: {e}"),
                })
        };
        Ok(Sources {
            rego: rego.iter().map(read).collect::<Result<_, _>>()?,
            data: data.iter().map(read).collect::<Result<_, _>>()?,
        })
    }

    /// The first builtin these modules call whose answer is not a function
    /// of the input and data (the clock, randomness, the network, time-
    /// dependent verification, output): a decision of such a policy must
    /// not be remembered. Read from the source text: a name in a comment or
    /// a string also counts, which only costs the cache.
    pub fn impure_builtin(&self) -> Option<&'static str> {
        const IMPURE: [&str; 10] = [
            "time.now_ns",
            "rand.intn",
            "uuid.rfc4122",
            "http.send",
            "opa.runtime",
            "net.lookup_ip_addr",
            "io.jwt.decode_verify",
            "crypto.x509.parse_and_verify_certificates",
            "print(",
            "trace(",
        ];
        IMPURE
            .into_iter()
            .find(|b| self.rego.iter().any(|(_, text)| text.contains(b)))
    }

    /// [`Compiled::load`] these sources for `decision`.
    pub fn compile(&self, decision: &str, limits: Limits) -> Result<Compiled, LoadError> {
        Compiled::load(&self.rego, &self.data, decision, limits)
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
        limits: Limits,
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
        // The merged document, as the interpreter holds it, for the VM.
        let all_data = engine.get_data();
        engine.set_execution_timer_config(limits.timer());
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
        // On a copy: compiling for the VM changes engine settings (print
        // gathering) the interpreter template should not carry.
        let (vm, vm_refused) = match Self::compile_vm(&mut engine.clone(), decision) {
            Ok(vm) => (Some(vm), None),
            Err(why) => (None, Some(why)),
        };
        let vm = vm.map(|(program, policy)| Vm {
            program,
            policy,
            data: all_data,
            pool: Mutex::new(Vec::new()),
        });
        let compiled = Compiled {
            template: engine,
            decision: decision.to_owned(),
            limits,
            vm,
            vm_refused,
            pool: Mutex::new(Vec::new()),
        };
        // A VM is made (and its data checked against the rules) here, not
        // by the first request.
        if let Some(vm) = &compiled.vm {
            let made = compiled.new_vm(vm).map_err(|e| LoadError {
                file: None,
                message: format!("decision `{decision}`: {e}"),
            })?;
            vm.pool.lock().push(made);
        }
        Ok(compiled)
    }

    /// The policy as RVM bytecode, or why the compiler did not take it.
    fn compile_vm(
        engine: &mut Engine,
        decision: &str,
    ) -> Result<(Arc<Program>, CompiledPolicy), String> {
        let rule: Arc<str> = Arc::from(decision);
        let policy = engine
            .compile_with_entrypoint(&rule)
            .map_err(|e| first_line(&e))?;
        single_definitions(&policy)?;
        no_iteration_before_else(&policy)?;
        let program =
            Compiler::compile_from_policy(&policy, &[decision]).map_err(|e| first_line(&e))?;
        Ok((program, policy))
    }

    fn new_vm(&self, vm: &Vm) -> Result<RegoVM, String> {
        let mut made = RegoVM::new_with_policy(vm.policy.clone());
        made.load_program(vm.program.clone());
        made.set_data(vm.data.clone()).map_err(|e| first_line(&e))?;
        made.set_max_instructions(self.limits.max_instructions);
        made.set_execution_timer_config(Some(self.limits.timer()));
        Ok(made)
    }

    /// Which evaluator runs the policy, for `explain` and the logs.
    pub fn evaluator(&self) -> String {
        match &self.vm_refused {
            None => "regorus VM".to_owned(),
            Some(why) => format!("regorus interpreter (the VM compiler refused: {why})"),
        }
    }

    /// Read `rego` and `data` files and [`Compiled::load`] them.
    pub fn from_files(
        rego: &[PathBuf],
        data: &[PathBuf],
        decision: &str,
        limits: Limits,
    ) -> Result<Compiled, LoadError> {
        Sources::read(rego, data)?.compile(decision, limits)
    }

    /// The rule path whose value is the decision.
    pub fn decision(&self) -> &str {
        &self.decision
    }

    /// Evaluate the decision rule over `input`. `Value::Undefined` means
    /// no rule body matched and there is no default.
    pub fn eval(&self, input: Value) -> Result<Value, EvalError> {
        let Some(vm) = &self.vm else {
            return self.eval_interpreted(input);
        };
        let pooled = vm.pool.lock().pop();
        let mut machine = match pooled {
            Some(m) => m,
            None => self.new_vm(vm).map_err(EvalError::Failed)?,
        };
        machine.set_input(input);
        // regorus is not known to panic on any input, but a panic here
        // would take the request's task down: it is caught and refused
        // like any failure, and the VM (maybe half-updated) dropped.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| machine.execute()));
        let (result, sound) = match result {
            Ok(Ok(v)) => (Ok(v), true),
            Ok(Err(
                VmError::InstructionLimitExceeded { .. } | VmError::TimeLimitExceeded { .. },
            )) => (Err(EvalError::OverBudget), true),
            Ok(Err(e)) => (Err(EvalError::Failed(first_line(&e))), true),
            Err(_) => (
                Err(EvalError::Failed("the evaluator panicked".into())),
                false,
            ),
        };
        if sound {
            let mut pool = vm.pool.lock();
            if pool.len() < POOL_MAX {
                pool.push(machine);
            }
        }
        result
    }

    /// Evaluate on the interpreter (what runs a policy the VM compiler
    /// refused; also the benchmark's and tests' reference).
    pub fn eval_interpreted(&self, input: Value) -> Result<Value, EvalError> {
        let pooled = self.pool.lock().pop();
        let mut engine = pooled.unwrap_or_else(|| self.template.clone());
        let (result, sound) = self.eval_on(&mut engine, input);
        // An engine whose evaluation failed is reset by its next
        // `eval_rule` like any other; only one that panicked is dropped.
        if sound {
            let mut pool = self.pool.lock();
            if pool.len() < POOL_MAX {
                pool.push(engine);
            }
        }
        result
    }

    /// The evaluation's result, and whether the engine may be used again.
    fn eval_on(&self, engine: &mut Engine, input: Value) -> (Result<Value, EvalError>, bool) {
        engine.set_input(input);
        // regorus is not known to panic on any input, but a panic here
        // would take the request's task down: it is caught and refused
        // like any failure, and the engine (maybe half-updated) dropped.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| engine.eval_rule(self.decision.clone())));
        match result {
            Ok(Ok(v)) => (Ok(v), true),
            Ok(Err(e)) if is_over_budget(&e) => (Err(EvalError::OverBudget), true),
            Ok(Err(e)) => (Err(EvalError::Failed(first_line(&e))), true),
            Err(_) => (
                Err(EvalError::Failed("the evaluator panicked".into())),
                false,
            ),
        }
    }
}

/// Refuse the VM for a policy with a complete rule or function defined
/// more than once (`decision := true if …` next to `decision := false if
/// …`). Rego requires such definitions to agree and OPA fails the
/// evaluation when they do not; regorus 0.14's VM does not check it and
/// returns one of the values, which could be an allow. The interpreter
/// does check (a conflict is `policy_error`), so such a policy runs there.
/// An `else` chain is one definition: the VM takes it.
fn single_definitions(policy: &CompiledPolicy) -> Result<(), String> {
    use regorus::unstable::{Rule, RuleHead};
    for (path, rules) in policy.get_rules() {
        let complete = rules
            .iter()
            .filter(|r| {
                matches!(
                    r.as_ref(),
                    Rule::Spec {
                        head: RuleHead::Compr { .. } | RuleHead::Func { .. },
                        ..
                    }
                )
            })
            .count();
        if complete > 1 {
            return Err(format!(
                "`{path}` has {complete} definitions, whose values only the interpreter checks for conflicts (write one rule with `else`)"
            ));
        }
    }
    Ok(())
}

/// Refuse the VM for a rule whose `else` chain follows a body that
/// iterates (`some x in …`, `some i; xs[i]`, `xs[_]`): regorus 0.14's VM
/// does not go on to the `else` when such a body fails, and answers the
/// rule's default (or undefined) where OPA and the interpreter take the
/// `else` — with `default decision := true`, an allow where OPA denies.
/// Found by the comparison with OPA (`tests/opa_conformance.rs`). The check reads
/// each body's source and errs towards the interpreter: any `some`, `[_]`
/// or index by a bare name counts as iteration. A body that calls a helper
/// rule which iterates is fine (the helper is its own rule).
fn no_iteration_before_else(policy: &CompiledPolicy) -> Result<(), String> {
    use regorus::unstable::Rule;
    for (path, rules) in policy.get_rules() {
        for rule in rules {
            let Rule::Spec { bodies, .. } = rule.as_ref() else {
                continue;
            };
            if !bodies.iter().any(|b| b.is_else) {
                continue;
            }
            let before_last = bodies.len().saturating_sub(1);
            for body in bodies.iter().take(before_last) {
                if iterates(body.query.span.text()) {
                    return Err(format!(
                        "`{path}` has an `else` after a body that iterates, which only the interpreter evaluates as OPA does (move the iteration into a helper rule)"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether a rule body's source may iterate: a `some` keyword, `[_]`, or
/// an index that is a bare name (`xs[i]`). Strings and comments are not
/// told apart: a false positive only costs the VM's speed.
fn iterates(body: &str) -> bool {
    let word = |w: &str| {
        body.match_indices(w).any(|(i, _)| {
            let before = body[..i].chars().next_back();
            let after = body[i + w.len()..].chars().next();
            let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !ident(before) && !ident(after)
        })
    };
    let bare_index = body.match_indices('[').any(|(i, _)| {
        let rest = &body[i + 1..];
        let end = rest.find(']').unwrap_or(0);
        let inner = rest[..end].trim();
        // `[` after an expression (an index), not a literal array `[a, b]`.
        let indexes = body[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ']' || c == ')');
        indexes
            && !inner.is_empty()
            && inner.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !inner.chars().all(|c| c.is_ascii_digit())
    });
    word("some") || bare_index
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
