//! The `policy` filter: build the input, evaluate, decide.

use std::path::PathBuf;

use ztgate_filter::{Decision, Facts, Filter, FilterKind, RequestView};

use crate::engine::{Compiled, EvalError};
use crate::input::{self, InputSpec};

/// The `policy` request filter of one config generation: the Rego compiled
/// once, evaluated per request.
#[derive(Debug)]
pub struct PolicyFilter {
    compiled: Compiled,
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
    /// Which evaluator ran it (the VM, or the interpreter and why).
    pub evaluator: String,
}

impl PolicyFilter {
    pub(crate) fn new(compiled: Compiled, spec: InputSpec, files: Vec<PathBuf>) -> Self {
        Self {
            compiled,
            spec,
            files,
        }
    }

    /// The compiled policy (for benchmarks and tests).
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// The whole decision for one request.
    pub fn decide(&self, req: &RequestView<'_>, facts: &Facts) -> Decision {
        let answer = self.compiled.eval(input::build(&self.spec, req, facts));
        if let Err(e) = &answer {
            // The caller is told only `policy_error`; the operator needs the why.
            tracing::warn!(request_id = %facts.request_id, error = %e, "policy gave no decision");
        }
        crate::decision::decide(&answer)
    }

    /// The same evaluation as [`PolicyFilter::decide`], with the input and
    /// the policy's raw answer, for `ztgate explain`.
    pub fn explain(&self, req: &RequestView<'_>, facts: &Facts) -> Explained {
        let input = input::build(&self.spec, req, facts);
        let input_json = serde_json::to_value(&input).unwrap_or_default();
        let answer = self.compiled.eval(input);
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
            evaluator: self.compiled.evaluator(),
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
