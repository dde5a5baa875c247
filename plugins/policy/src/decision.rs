//! What the policy answered → allow or deny: the filter's whole decision,
//! a pure function of the evaluation's result.
//!
//! | the decision rule's value | ztgate |
//! |---|---|
//! | `true`, `{allow: true, …}` | continue |
//! | `false`, `{allow: false}` | 7 PERMISSION_DENIED `policy_denied` |
//! | `{allow: false, reason: "code"}` | 7 PERMISSION_DENIED `code` |
//! | undefined (no rule body matched, no `default`) | 7 PERMISSION_DENIED `policy_denied` |
//! | anything else, a runtime error, over budget | 13 INTERNAL `policy_error` |
//!
//! A `reason` must be a reason code (1 to 64 of `a-z`, `0-9`, `_`,
//! starting with a letter, not a built-in code): it goes into
//! `grpc-message`, the `reason` label of the metrics and the audit line. A
//! reason that is not one is replaced by `policy_denied` (the denial
//! stands) — echoing a policy's free text to callers and metrics would
//! leak what the policy read and grow the label without bound.

use regorus::Value;
use ztgate_filter::{Decision, PolicyCode, Reason};

use crate::engine::EvalError;

/// The caller-facing message of a policy denial: the reason code says
/// which rule, nothing more is told.
pub const DENIED: &str = "denied by policy";

/// The decision for what the policy answered.
pub fn decide(answer: &Result<Value, EvalError>) -> Decision {
    let value = match answer {
        Ok(v) => v,
        Err(EvalError::OverBudget) => {
            return Decision::deny(Reason::PolicyError, "policy over its time budget")
        }
        Err(EvalError::Failed(_)) => {
            return Decision::deny(Reason::PolicyError, "policy evaluation failed")
        }
    };
    match value {
        Value::Bool(true) => Decision::Continue,
        Value::Bool(false) | Value::Undefined => Decision::deny(Reason::PolicyDenied, DENIED),
        Value::Object(o) => {
            let allow = o.get(&Value::from("allow"));
            let reason = o.get(&Value::from("reason"));
            match allow {
                Some(Value::Bool(true)) => Decision::Continue,
                Some(Value::Bool(false)) => Decision::deny(reason_of(reason), DENIED),
                _ => malformed(),
            }
        }
        _ => malformed(),
    }
}

fn malformed() -> Decision {
    Decision::deny(
        Reason::PolicyError,
        "policy decision is not true/false or {allow, reason}",
    )
}

/// The reason a denial is reported under.
fn reason_of(reason: Option<&Value>) -> Reason {
    match reason {
        Some(Value::String(code)) => match PolicyCode::intern(code) {
            Ok(code) => Reason::Policy(code),
            Err(e) => {
                tracing::debug!(error = %e, "policy reason not used; reporting policy_denied");
                Reason::PolicyDenied
            }
        },
        _ => Reason::PolicyDenied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn obj(pairs: &[(&str, Value)]) -> Value {
        Value::from(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn reason(d: Decision) -> Option<&'static str> {
        match d {
            Decision::Deny(d) => Some(d.reason.as_str()),
            _ => None,
        }
    }

    #[test]
    fn booleans_and_objects() {
        assert_eq!(decide(&Ok(Value::from(true))), Decision::Continue);
        assert_eq!(
            reason(decide(&Ok(Value::from(false)))),
            Some("policy_denied")
        );
        assert_eq!(reason(decide(&Ok(Value::Undefined))), Some("policy_denied"));
        let allow = obj(&[("allow", Value::from(true)), ("reason", Value::from("ok"))]);
        assert_eq!(decide(&Ok(allow)), Decision::Continue);
        let deny = obj(&[
            ("allow", Value::from(false)),
            ("reason", Value::from("refund_blocked")),
        ]);
        assert_eq!(reason(decide(&Ok(deny))), Some("refund_blocked"));
        let bare = obj(&[("allow", Value::from(false))]);
        assert_eq!(reason(decide(&Ok(bare))), Some("policy_denied"));
    }

    /// A reason that is not a reason code never reaches the caller; the
    /// denial stands.
    #[test]
    fn bad_reasons_become_policy_denied() {
        for bad in [
            Value::from("Not A Code"),
            Value::from("scope_missing"),
            Value::from(7u64),
            Value::from("x".repeat(65)),
        ] {
            let d = obj(&[("allow", Value::from(false)), ("reason", bad.clone())]);
            assert_eq!(reason(decide(&Ok(d))), Some("policy_denied"), "{bad:?}");
        }
    }

    /// Anything but a boolean or `{allow: bool}` is the policy's bug: never
    /// an allow.
    #[test]
    fn malformed_answers_and_errors_are_policy_errors() {
        for v in [
            Value::from("true"),
            Value::from(1u64),
            Value::Null,
            Value::from(vec![Value::from(true)]),
            obj(&[("allow", Value::from("yes"))]),
            obj(&[("reason", Value::from("x"))]),
        ] {
            assert_eq!(
                reason(decide(&Ok(v.clone()))),
                Some("policy_error"),
                "{v:?}"
            );
        }
        assert_eq!(
            reason(decide(&Err(EvalError::OverBudget))),
            Some("policy_error")
        );
        let failed = Err(EvalError::Failed("conflict".into()));
        assert_eq!(reason(decide(&failed)), Some("policy_error"));
    }
}
