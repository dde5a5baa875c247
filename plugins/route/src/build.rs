//! `routes:` → [`RouteFilter`]: every problem collected with its key path.

use std::collections::HashMap;
use std::sync::Arc;

use ztgate_filter::{BuildContext, ConfigProblem, FilterKind};

use crate::config;
use crate::pattern::MethodPattern;
use crate::select::{ScopeRule, SelectEntry};
use crate::table::{host_of, CompiledRoute, RouteTable};
use crate::RouteFilter;
use ztgate_filter::spiffe::{SpiffeAllowList, SpiffePattern};

/// Longest route name: it is a metrics label and an audit field.
const MAX_NAME_LEN: usize = 128;

/// Build the route filter from `routes:`. `path` is the key path of the
/// list (`routes`); problems are reported as `routes[i].select[j].upstream`.
pub fn build(
    raw: &[config::Route],
    ctx: &BuildContext,
    path: &str,
) -> Result<RouteFilter, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    if u32::try_from(raw.len()).is_err() {
        problems.push(ConfigProblem::new(path, "too many routes"));
        return Err(problems);
    }
    let mut first_at: HashMap<&str, usize> = HashMap::new();
    let mut routes = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let key = format!("{path}[{i}]");
        check_name(&r.name, &format!("{key}.name"), &mut problems);
        if let Some(first) = first_at.get(r.name.as_str()) {
            problems.push(ConfigProblem::new(
                format!("{key}.name"),
                format!(
                    "duplicate route name {:?} (first used by {path}[{first}])",
                    r.name
                ),
            ));
        } else {
            first_at.insert(&r.name, i);
        }
        if let Some(route) = build_route(i, r, ctx, &key, &mut problems) {
            routes.push(route);
        }
    }
    if problems.is_empty() {
        Ok(RouteFilter::new(RouteTable::new(routes)))
    } else {
        Err(problems)
    }
}

fn build_route(
    index: usize,
    r: &config::Route,
    ctx: &BuildContext,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<CompiledRoute> {
    let config::Route {
        name,
        matcher,
        mode,
        spiffe,
        select,
        policy: _, // the `policy` filter's, checked where it is built
    } = r;
    let config::Match { grpc, authority } = matcher;
    let pattern = MethodPattern::parse(grpc)
        .map_err(|e| {
            problems.push(ConfigProblem::new(
                format!("{key}.match.grpc"),
                e.to_string(),
            ))
        })
        .ok();
    let authority = authority
        .as_deref()
        .and_then(|a| build_authority(a, &format!("{key}.match.authority"), problems));
    let spiffe = spiffe
        .as_deref()
        .and_then(|list| build_spiffe(list, ctx, &format!("{key}.spiffe"), problems));
    if select.is_empty() {
        problems.push(ConfigProblem::new(
            format!("{key}.select"),
            "at least one entry is needed: a route without upstreams can only deny",
        ));
    }
    let mut entries = Vec::with_capacity(select.len());
    for (j, s) in select.iter().enumerate() {
        let skey = format!("{key}.select[{j}]");
        if j > 0
            && select
                .get(j - 1)
                .is_some_and(|p| p.scopes.is_none() && p.spiffe.is_none())
        {
            problems.push(ConfigProblem::new(
                &skey,
                format!(
                    "unreachable: {key}.select[{}] has no scopes or spiffe rule and always wins",
                    j - 1
                ),
            ));
        }
        if let Some(e) = build_select(s, ctx, &skey, problems) {
            entries.push(e);
        }
    }
    Some(CompiledRoute {
        name: Arc::from(name.as_str()),
        index,
        pattern_text: grpc.clone(),
        pattern: pattern?,
        authority,
        mode: *mode,
        spiffe,
        select: entries,
    })
}

fn check_name(name: &str, key: &str, problems: &mut Vec<ConfigProblem>) {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        problems.push(ConfigProblem::new(
            key,
            format!("a route name is 1 to {MAX_NAME_LEN} letters, digits, `-`, `_` or `.` (it is a metrics label)"),
        ));
    }
}

fn build_authority(a: &str, key: &str, problems: &mut Vec<ConfigProblem>) -> Option<String> {
    let host = host_of(a);
    let ok = !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        });
    if ok {
        Some(host.to_ascii_lowercase())
    } else {
        problems.push(ConfigProblem::new(key, "not a host name or IP address"));
        None
    }
}

fn build_spiffe(
    list: &[String],
    ctx: &BuildContext,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<SpiffeAllowList> {
    if list.is_empty() {
        problems.push(ConfigProblem::new(
            key,
            "an empty list allows nobody; leave the key out to allow any identity",
        ));
        return None;
    }
    if !ctx.runs_before(FilterKind::Mtls, FilterKind::Route) {
        problems.push(ConfigProblem::new(
            key,
            "SPIFFE rules need `mtls` before `route` in `pipeline:`",
        ));
    }
    let before = problems.len();
    let patterns: Vec<SpiffePattern> = list
        .iter()
        .enumerate()
        .filter_map(|(k, p)| {
            SpiffePattern::parse(p)
                .map_err(|e| {
                    problems.push(ConfigProblem::new(format!("{key}[{k}]"), e.to_string()))
                })
                .ok()
        })
        .collect();
    (problems.len() == before).then(|| SpiffeAllowList::new(patterns))
}

fn build_select(
    s: &config::Select,
    ctx: &BuildContext,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<SelectEntry> {
    let config::Select {
        scopes,
        spiffe,
        upstream,
    } = s;
    let scopes = scopes
        .as_ref()
        .and_then(|sc| build_scopes(sc, ctx, &format!("{key}.scopes"), problems));
    let spiffe = spiffe
        .as_deref()
        .and_then(|l| build_spiffe(l, ctx, &format!("{key}.spiffe"), problems));
    if !ctx.upstreams.iter().any(|u| u == upstream) {
        problems.push(ConfigProblem::new(
            format!("{key}.upstream"),
            format!("no upstream named {upstream:?} under `upstreams:`"),
        ));
    }
    Some(SelectEntry {
        scopes,
        spiffe,
        upstream: Arc::from(upstream.as_str()),
    })
}

fn build_scopes(
    s: &config::Scopes,
    ctx: &BuildContext,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<ScopeRule> {
    let config::Scopes { all, any } = s;
    let rule = match (all, any) {
        (Some(all), None) => ScopeRule::All(all.clone()),
        (None, Some(any)) => ScopeRule::Any(any.clone()),
        _ => {
            problems.push(ConfigProblem::new(key, "set exactly one of `all` or `any`"));
            return None;
        }
    };
    let (list, sub) = match &rule {
        ScopeRule::All(l) => (l, "all"),
        ScopeRule::Any(l) => (l, "any"),
    };
    let mut ok = true;
    if list.is_empty() {
        problems.push(ConfigProblem::new(
            format!("{key}.{sub}"),
            "empty list; leave `scopes` out for no scope rule",
        ));
        ok = false;
    }
    for (k, scope) in list.iter().enumerate() {
        if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problems.push(ConfigProblem::new(
                format!("{key}.{sub}[{k}]"),
                "a scope is a non-empty word without spaces",
            ));
            ok = false;
        }
    }
    if !ctx.runs_before(FilterKind::Jwt, FilterKind::Route) {
        problems.push(ConfigProblem::new(
            key,
            "scope rules need `jwt` before `route` in `pipeline:`",
        ));
        ok = false;
    }
    ok.then_some(rule)
}
