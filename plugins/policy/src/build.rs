//! `policy:` → [`PolicyFilter`]: every problem with its key path; a Rego
//! file that does not compile is reported with its own file and line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use ztgate_filter::{BuildContext, ConfigProblem, FilterKind};

use crate::config;
use crate::engine::{Limits, LoadError, Sources};
use crate::filter::Rule;
use crate::input::InputSpec;
use crate::PolicyFilter;

/// A route that names its own decision rule (`routes[i].policy.decision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// The route's name, as the `route` filter records it.
    pub route: String,
    /// The rule path under `data.`.
    pub decision: String,
    /// Where it is written (`routes[3].policy.decision`), for problems.
    pub key: String,
}

/// Longest `budget`: a policy is on every request's path.
const MAX_BUDGET: Duration = Duration::from_secs(1);

/// Headers that carry credentials: the input holds what the filters
/// verified, never a token or a cookie a policy could copy or log.
const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "dpop", "cookie"];

/// The filters whose facts the input holds: each must run before `policy`
/// when it is in the pipeline, or its fields would never be there.
const READS_FROM: [FilterKind; 4] = [
    FilterKind::Mtls,
    FilterKind::Jwt,
    FilterKind::Device,
    FilterKind::Route,
];

/// Build the filter from `policy:` (at key path `path`, i.e. `policy`),
/// with the routes that name their own decision rule.
pub fn build(
    raw: &config::Policy,
    routes: &[RouteRule],
    ctx: &BuildContext,
    path: &str,
) -> Result<PolicyFilter, Vec<ConfigProblem>> {
    let config::Policy {
        mode: _, // applied by the gateway's Stage
        rego,
        data,
        decision,
        input_claims,
        input_headers,
        budget,
        max_instructions,
        decision_cache,
    } = raw;
    let mut problems = Vec::new();
    let in_pipeline = ctx.position(FilterKind::Policy.as_str()).is_some();
    if rego.is_empty() {
        problems.push(ConfigProblem::new(
            format!("{path}.rego"),
            "needs at least one Rego file",
        ));
    }
    if !decision.starts_with("data.") {
        problems.push(not_a_rule_path(format!("{path}.decision"), decision));
    }
    for r in routes {
        if !r.decision.starts_with("data.") {
            problems.push(not_a_rule_path(r.key.clone(), &r.decision));
        }
    }
    if budget.is_zero() || *budget > MAX_BUDGET {
        problems.push(ConfigProblem::new(
            format!("{path}.budget"),
            "must be more than 0s and at most 1s",
        ));
    }
    if *max_instructions == 0 {
        problems.push(ConfigProblem::new(
            format!("{path}.max_instructions"),
            "must be at least 1",
        ));
    }
    for kind in READS_FROM {
        if in_pipeline
            && ctx.position(kind.as_str()).is_some()
            && !ctx.runs_before(kind, FilterKind::Policy)
        {
            problems.push(ConfigProblem::new(
                "pipeline",
                format!("`policy` reads what `{kind}` proves: put `{kind}` before `policy`"),
            ));
        }
    }
    if !input_claims.is_empty()
        && in_pipeline
        && !ctx.runs_before(FilterKind::Jwt, FilterKind::Policy)
    {
        problems.push(ConfigProblem::new(
            format!("{path}.input_claims"),
            "token claims need `jwt` before `policy` in `pipeline:`",
        ));
    }
    for (i, claim) in input_claims.iter().enumerate() {
        if claim.is_empty() {
            problems.push(ConfigProblem::new(
                format!("{path}.input_claims[{i}]"),
                "empty claim name",
            ));
        }
    }
    let mut headers = Vec::with_capacity(input_headers.len());
    for (i, name) in input_headers.iter().enumerate() {
        let at = format!("{path}.input_headers[{i}]");
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if h.as_str() != name => problems.push(ConfigProblem::new(
                at,
                format!("write header names in lowercase (`{}`)", h.as_str()),
            )),
            Ok(h) if CREDENTIAL_HEADERS.contains(&h.as_str()) => problems.push(ConfigProblem::new(
                at,
                format!("`{name}` carries credentials and is never part of the input (use input_claims for verified token claims)"),
            )),
            Ok(h) => headers.push(h),
            Err(_) => problems.push(ConfigProblem::new(at, format!("`{name}` is not a header name"))),
        }
    }
    let rego_files: Vec<PathBuf> = rego.iter().map(|p| ctx.resolve(p)).collect();
    let data_files: Vec<PathBuf> = data.iter().map(|p| ctx.resolve(p)).collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let limits = Limits {
        budget: *budget,
        max_instructions: *max_instructions,
    };
    let at = |e: LoadError, decision_key: &str| {
        load_problem(e, &rego_files, &data_files, path, decision_key)
    };
    let sources = Sources::read(&rego_files, &data_files)
        .map_err(|e| vec![at(e, &format!("{path}.decision"))])?;
    let default = sources
        .compile(decision, limits)
        .map_err(|e| vec![at(e, &format!("{path}.decision"))])?;
    let impure = sources.impure_builtin();
    let default = Arc::new(Rule::new(default, *decision_cache, impure));
    // Each distinct rule compiled once, shared by the routes naming it.
    let mut rules: HashMap<&str, Arc<Rule>> = HashMap::new();
    rules.insert(decision, default.clone());
    let mut by_route = HashMap::new();
    for r in routes {
        let rule = match rules.get(r.decision.as_str()) {
            Some(rule) => rule.clone(),
            None => match sources.compile(&r.decision, limits) {
                Ok(c) => {
                    let rule = Arc::new(Rule::new(c, *decision_cache, impure));
                    rules.insert(&r.decision, rule.clone());
                    rule
                }
                Err(e) => {
                    problems.push(at(e, &r.key));
                    continue;
                }
            },
        };
        by_route.insert(r.route.clone(), rule);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let spec = InputSpec {
        claims: input_claims.clone(),
        headers,
    };
    let files = rego_files.into_iter().chain(data_files).collect();
    Ok(PolicyFilter::new(default, by_route, spec, files))
}

fn not_a_rule_path(key: String, decision: &str) -> ConfigProblem {
    ConfigProblem::new(
        key,
        format!("`{decision}` is not a rule path under `data.` (e.g. data.ztgate.decision)"),
    )
}

/// A load error as a problem at its file's key (`policy.rego[1]`), or at
/// `decision_key` when it is about the decision rule.
fn load_problem(
    e: LoadError,
    rego_files: &[PathBuf],
    data_files: &[PathBuf],
    path: &str,
    decision_key: &str,
) -> ConfigProblem {
    let key = match &e.file {
        Some(f) => {
            let in_rego = rego_files.iter().position(|p| p == f);
            let in_data = data_files.iter().position(|p| p == f);
            match (in_rego, in_data) {
                (Some(i), _) => format!("{path}.rego[{i}]"),
                (None, Some(i)) => format!("{path}.data[{i}]"),
                (None, None) => path.to_owned(),
            }
        }
        None => decision_key.to_owned(),
    };
    // regorus names the file and line of a compile error itself
    // (`FILE:LINE:COL: error: …`); a data error gets its file here.
    let message = match &e.file {
        Some(f) if !e.message.contains(&f.display().to_string()) => {
            format!("{}: {}", f.display(), e.message)
        }
        _ => e.message,
    };
    ConfigProblem::new(key, message)
}
