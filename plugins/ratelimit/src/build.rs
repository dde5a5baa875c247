//! `ratelimit:` → [`RateLimitFilter`]: every problem with its key path.

use std::collections::HashMap;
use std::time::Duration;

use ztgate_filter::{BuildContext, ConfigProblem, FilterKind};

use crate::config;
use crate::rule::Rule;
use crate::RateLimitFilter;

/// Shortest window. pingora-limits' `Rate` asserts on a reset race that can
/// only fire when a window ends within its first second (an unsigned
/// `now - 1000` underflow), and `retry-after` is in whole seconds anyway.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest window: the count-min sketch only forgets at window ends, so a
/// longer window collects more collisions (over-counting) between resets.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Build the filter from `ratelimit:`; `path` is `ratelimit`.
pub fn build(
    raw: &config::RateLimit,
    ctx: &BuildContext,
    path: &str,
) -> Result<RateLimitFilter, Vec<ConfigProblem>> {
    let config::RateLimit {
        mode: _, // applied by the gateway's Stage
        rules,
    } = raw;
    let mut problems = Vec::new();
    let mut first_at: HashMap<&str, usize> = HashMap::new();
    let mut built = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let key = format!("{path}.rules[{i}]");
        let config::Rule {
            name,
            key: id_key,
            route,
            limit,
            interval,
        } = r;
        let name_ok = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            problems.push(ConfigProblem::new(
                format!("{key}.name"),
                "a rule name is 1 to 128 letters, digits, `-`, `_` or `.`",
            ));
        } else if let Some(first) = first_at.get(name.as_str()) {
            problems.push(ConfigProblem::new(
                format!("{key}.name"),
                format!("duplicate rule name {name:?} (first used by {path}.rules[{first}])"),
            ));
        } else {
            first_at.insert(name, i);
        }
        if let Some(filter) = id_key.provided_by() {
            if !ctx.runs_before(filter, FilterKind::Ratelimit) {
                problems.push(ConfigProblem::new(
                    format!("{key}.key"),
                    format!(
                        "key `{}` needs `{filter}` before `ratelimit` in `pipeline:`",
                        id_key.as_str()
                    ),
                ));
            }
        }
        if let Some(route) = route {
            if route.is_empty() {
                problems.push(ConfigProblem::new(
                    format!("{key}.route"),
                    "empty route name",
                ));
            } else if !ctx.runs_before(FilterKind::Route, FilterKind::Ratelimit) {
                problems.push(ConfigProblem::new(
                    format!("{key}.route"),
                    "a per-route rule needs `route` before `ratelimit` in `pipeline:`",
                ));
            }
        }
        if *limit == 0 {
            problems.push(ConfigProblem::new(
                format!("{key}.limit"),
                "must be at least 1 (a limit of 0 would refuse everything)",
            ));
        }
        if *interval < MIN_INTERVAL || *interval > MAX_INTERVAL {
            problems.push(ConfigProblem::new(
                format!("{key}.interval"),
                "must be between 1s and 24h",
            ));
        }
        built.push(Rule::new(
            name,
            *id_key,
            route.as_deref(),
            *limit,
            *interval,
            &ctx.memory,
        ));
    }
    if problems.is_empty() {
        Ok(RateLimitFilter::new(built, ctx.state.clone()))
    } else {
        Err(problems)
    }
}

/// Check `ratelimit.rules[i].route` against the configured route names
/// (the gateway calls this: the section build does not see `routes:`).
pub fn check_route_names(
    raw: &config::RateLimit,
    path: &str,
    route_names: &[&str],
) -> Vec<ConfigProblem> {
    raw.rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let route = r.route.as_deref()?;
            (!route_names.contains(&route)).then(|| {
                ConfigProblem::new(
                    format!("{path}.rules[{i}].route"),
                    format!("no route named {route:?} under `routes:`"),
                )
            })
        })
        .collect()
}
