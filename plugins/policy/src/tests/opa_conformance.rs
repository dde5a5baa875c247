//! regorus against the real Open Policy Agent: the same Rego, data and
//! input documents, evaluated by regorus' VM, by its interpreter and by OPA
//! (PyPI's `opa-golib-python-bindings`: OPA's Go engine as a C library,
//! fetched by `scripts/fetch-opa.sh`, driven by `testdata/opa_eval.py`).
//! Every decision must agree: the same value, both undefined, or both an
//! error. The inputs are the ones the filter builds from facts (via
//! `explain`), so what is compared is what production evaluates.
//!
//! Without OPA the test fails and says how to get it; `ZTGATE_NO_OPA=1`
//! skips it explicitly (CI fetches OPA, see `scripts/test.sh`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use http::HeaderMap;
use serde_json::{json, Value as Json};
use ztgate_filter::{Facts, SelectedRoute, TlsFacts};

use super::{headers, refunds, view, Caller, Dir, REFUNDS, REFUNDS_DATA};
use crate::engine::{Compiled, EvalError, Limits};

/// A policy exercising the builtins and language features request
/// policies use: sets, comprehensions, `every`, `some … in`, string and
/// glob/regex matching, CIDR checks, `sprintf`, object lookups with
/// defaults, numbers, and an `else` chain returning objects.
const FEATURES: &str = r#"package features
import rego.v1

default decision := {"allow": false, "reason": "no_rule_matched"}

decision := {"allow": false, "reason": "too_many_scopes"} if {
    count(input.scopes) > 3
} else := {"allow": true} if {
    every s in input.scopes { startswith(s, "payments:") }
    some c in data.countries
    c == input.country
    glob.match("spiffe://acme.test/ns/*/sa/*", ["/"], input.spiffe_id)
    regex.match(`^[a-z]+$`, input.subject)
    net.cidr_contains("10.0.0.0/8", input.client_ip)
} else := {"allow": false, "reason": sprintf("from_%s", [lower(object.get(input, "country", "xx"))])} if {
    input.country
}

scope_set := {s | some s in input.scopes}
writes := [s | some s in input.scopes; endswith(s, ":write")]
asn_band := "low" if input.asn < 10000 else := "high"
summary := {
    "n": count(scope_set),
    "writes": writes,
    "band": asn_band,
    "anon": count(object.get(input, "anonymous", [])) > 0,
    "upper": upper(object.get(input, "method", "")),
    "split": split(input.service, "."),
}
"#;

const FEATURES_DATA: &str = r#"{"countries": ["DE", "FR"]}"#;

/// Two definitions of one complete rule: OPA fails the evaluation when
/// they disagree, and so must we (the interpreter runs such a policy).
const CONFLICT: &str = "package conflict\nimport rego.v1\ndecision := true if input.method == \"Refund\"\ndecision := false if input.country == \"US\"\n";

struct Policy {
    modules: Vec<(String, String)>,
    data: Vec<Json>,
    decisions: Vec<&'static str>,
}

fn opa_dir() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join(".cache/opa/0.4.4");
    dir.join("opa_bindings/libopabridge.so")
        .exists()
        .then_some(dir)
}

/// OPA's answer for each (decision, input).
fn opa(p: &Policy, cases: &[(&str, Json)], dir: &PathBuf) -> Vec<Json> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/opa_eval.py");
    let req = json!({
        "modules": p.modules,
        "data": p.data,
        "cases": cases.iter().map(|(d, i)| json!({"decision": d, "input": i})).collect::<Vec<_>>(),
    });
    let mut child = Command::new("python3")
        .arg(script)
        .env("PYTHONPATH", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "opa_eval.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A regorus result in the driver's shape.
fn shape(r: Result<regorus::Value, EvalError>) -> Json {
    match r {
        Ok(regorus::Value::Undefined) => json!({"undefined": true}),
        Ok(v) => json!({"value": serde_json::to_value(&v).unwrap()}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// Whether OPA's and regorus' answers agree (errors agree with errors;
/// their texts differ by engine).
fn agree(a: &Json, b: &Json) -> bool {
    match (a.get("error"), b.get("error")) {
        (Some(_), Some(_)) => true,
        (None, None) => a == b,
        _ => false,
    }
}

/// The input documents the filter builds for a spread of callers, paths
/// and routes: every condition of the refund policy on and off.
fn inputs() -> Vec<Json> {
    let dir = Dir::new("opa-inputs");
    let f = refunds(&dir);
    let callers = [
        Caller::default(),
        Caller {
            spiffe: "spiffe://acme.test/ns/shop/sa/web",
            ..Caller::default()
        },
        Caller {
            spiffe: "spiffe://partner.test/x",
            ..Caller::default()
        },
        Caller {
            scopes: vec!["payments:read"],
            ..Caller::default()
        },
        Caller {
            scopes: vec!["a", "b", "c", "payments:write"],
            ..Caller::default()
        },
        Caller {
            subject: "mallory",
            ..Caller::default()
        },
        Caller {
            subject: "Bob1",
            ..Caller::default()
        },
        Caller {
            asn: 64512,
            anonymous: vec![],
            ..Caller::default()
        },
        Caller {
            country: "US",
            ..Caller::default()
        },
        Caller {
            tenant: "t2",
            ..Caller::default()
        },
    ];
    let tls = TlsFacts::default();
    let mut out = Vec::new();
    for caller in &callers {
        for path in [
            "/payments.v1.Payments/Refund",
            "/payments.v1.Payments/Get",
            "/orders.v1.Orders/Refund",
        ] {
            for tenant in ["t1", "t2"] {
                let h = headers(tenant);
                let mut facts = caller.facts();
                if path.starts_with("/orders") {
                    facts.set_route(SelectedRoute::attested_by_route(
                        "orders".into(),
                        "orders".into(),
                    ));
                }
                out.push(f.explain(&view(path, &h, &tls), &facts).input);
            }
        }
    }
    // Nothing proved at all.
    let h = HeaderMap::new();
    out.push(
        f.explain(&view("/a.B/C", &h, &tls), &Facts::default())
            .input,
    );
    out
}

#[test]
fn regorus_decides_as_opa_does() {
    let Some(opa_dir) = opa_dir() else {
        if std::env::var_os("ZTGATE_NO_OPA").is_some() {
            eprintln!("ZTGATE_NO_OPA set: OPA comparison skipped");
            return;
        }
        panic!("no OPA engine in .cache/opa: run scripts/fetch-opa.sh (or set ZTGATE_NO_OPA=1 to skip)");
    };
    let policies = [
        Policy {
            modules: vec![("refunds.rego".into(), REFUNDS.into())],
            data: vec![serde_json::from_str(REFUNDS_DATA).unwrap()],
            decisions: vec!["data.ztgate.decision", "data.ztgate.refund_ok"],
        },
        Policy {
            modules: vec![("features.rego".into(), FEATURES.into())],
            data: vec![serde_json::from_str(FEATURES_DATA).unwrap()],
            decisions: vec!["data.features.decision", "data.features.summary"],
        },
        Policy {
            modules: vec![("conflict.rego".into(), CONFLICT.into())],
            data: vec![],
            decisions: vec!["data.conflict.decision"],
        },
    ];
    let inputs = inputs();
    let limits = Limits {
        budget: std::time::Duration::from_secs(1),
        max_instructions: 10_000_000,
    };
    let (mut compared, mut errors) = (0, 0);
    for p in &policies {
        let dir = Dir::new("opa-policy");
        let mut rego = Vec::new();
        for (name, text) in &p.modules {
            dir.write(name, text);
            rego.push(dir.0.join(name));
        }
        let mut data = Vec::new();
        for (i, d) in p.data.iter().enumerate() {
            let name = format!("data{i}.json");
            dir.write(&name, &d.to_string());
            data.push(dir.0.join(name));
        }
        let mut cases = Vec::new();
        for decision in &p.decisions {
            for input in &inputs {
                cases.push((*decision, input.clone()));
            }
        }
        let theirs = opa(p, &cases, &opa_dir);
        for decision in &p.decisions {
            let compiled = Compiled::from_files(&rego, &data, decision, limits).unwrap();
            for (input, (_, opa_answer)) in inputs.iter().zip(
                cases
                    .iter()
                    .zip(&theirs)
                    .filter(|((d, _), _)| d == decision)
                    .map(|((d, _), a)| (d, a)),
            ) {
                let value = regorus::Value::from(input.clone());
                let vm = shape(compiled.eval(value.clone()));
                let interpreted = shape(compiled.eval_interpreted(value));
                assert!(
                    agree(&vm, opa_answer) && agree(&interpreted, opa_answer),
                    "{decision} disagrees with OPA\n input: {input}\n OPA: {opa_answer}\n regorus ({}): {vm}\n interpreter: {interpreted}",
                    compiled.evaluator()
                );
                compared += 1;
                errors += usize::from(opa_answer.get("error").is_some());
            }
        }
    }
    // The comparison covered answers of every kind.
    assert!(compared >= 300, "{compared}");
    assert!(errors > 0, "no case where OPA fails the evaluation");
    eprintln!("{compared} decisions compared with OPA ({errors} errors on both sides)");
}
