//! `state:` → the [`SharedState`] the filters use: every problem with its
//! key path.
//!
//! Building does no network I/O and needs no tokio runtime (`ztgate check`
//! calls it): URLs are parsed, never resolved or dialled; the store
//! connects on first use (see [`crate::redis`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use ztgate_filter::{ConfigProblem, SharedState};

use crate::raw::{self, redact_url, Backend, Secret, Urls};
use crate::redis::RedisStore;

/// Longest `state.redis.timeout`. Every request that uses shared state may
/// wait this long when the store is slow; beyond a second a store is not
/// "slow" any more, and `on_unavailable` is the answer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest `state.redis.connect_timeout`: a connection attempt that takes
/// longer is to an unreachable server.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `state.redis.key_prefix`: it is repeated in every key, and
/// Redis keys are memory.
pub const MAX_KEY_PREFIX_LEN: usize = 64;

/// The URL schemes accepted (`valkey://`, `unix://` and the other aliases
/// redis-rs knows are refused to keep one spelling in configs).
const SCHEMES: [&str; 3] = ["redis", "rediss", "redis+unix"];

/// Build the shared state from `state:`; `path` is the section's key path
/// (`state`). `Ok(None)` for `backend: memory` (each filter keeps its own
/// in-process state).
pub fn build(
    raw: &raw::StateSection,
    path: &str,
) -> Result<Option<SharedState>, Vec<ConfigProblem>> {
    Ok(build_store(raw, path)?.map(|b| b.shared))
}

/// What [`build_store`] returns: the [`SharedState`] for the filters, and
/// the same store as its concrete type, for what the seam does not offer
/// ([`RedisStore::connect_in_background`] when serving starts,
/// [`RedisStore::circuit_open`] for readiness or `explain`).
#[derive(Debug, Clone)]
pub struct Built {
    pub shared: SharedState,
    pub store: Arc<RedisStore>,
}

/// [`build`], keeping the concrete store.
pub fn build_store(
    raw: &raw::StateSection,
    path: &str,
) -> Result<Option<Built>, Vec<ConfigProblem>> {
    let Some(config) = check(raw, path)? else {
        return Ok(None);
    };
    let store = RedisStore::new(&config)
        .map_err(|e| vec![ConfigProblem::new(format!("{path}.redis"), e.to_string())])?;
    let store = Arc::new(store);
    Ok(Some(Built {
        shared: SharedState {
            store: store.clone(),
            on_unavailable: raw.on_unavailable.resolve(),
        },
        store,
    }))
}

/// Validate `state:` without creating a store: `Ok(None)` for
/// `backend: memory`, else the Redis settings [`RedisStore::new`] takes.
pub fn check(
    raw: &raw::StateSection,
    path: &str,
) -> Result<Option<RedisConfig>, Vec<ConfigProblem>> {
    let raw::StateSection {
        backend,
        redis,
        on_unavailable: _,
    } = raw;
    let mut problems = Vec::new();
    let config = match (backend, redis) {
        (Backend::Memory, None) => None,
        (Backend::Memory, Some(_)) => {
            problems.push(ConfigProblem::new(
                format!("{path}.redis"),
                "`redis:` is only used with `backend: redis` (the backend is `memory`)",
            ));
            None
        }
        (Backend::Redis, None) => {
            problems.push(ConfigProblem::new(
                format!("{path}.backend"),
                "`backend: redis` needs a `redis:` section with at least `url`",
            ));
            None
        }
        (Backend::Redis, Some(r)) => check_redis(r, &format!("{path}.redis"), &mut problems),
    };
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

fn check_redis(
    r: &raw::RedisSection,
    path: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<RedisConfig> {
    let raw::RedisSection {
        url,
        cluster,
        password,
        key_prefix,
        timeout,
        connect_timeout,
    } = r;
    let cluster = *cluster;
    let before = problems.len();

    let url_path = format!("{path}.url");
    match (url, cluster) {
        (Urls::List(_), false) => problems.push(ConfigProblem::new(
            &url_path,
            "a list of URLs needs `cluster: true` (a single server is one URL)",
        )),
        (Urls::List(l), true) if l.is_empty() => problems.push(ConfigProblem::new(
            &url_path,
            "`cluster: true` needs at least one seed node URL",
        )),
        _ => {}
    }
    let mut nodes = Vec::new();
    for (i, u) in url.as_slice().iter().enumerate() {
        let key = match url {
            Urls::One(_) => url_path.clone(),
            Urls::List(_) => format!("{url_path}[{i}]"),
        };
        match check_url(u, cluster) {
            Ok(info) => nodes.push(info),
            Err(message) => problems.push(ConfigProblem::new(key, message)),
        }
    }
    if cluster && nodes.len() > 1 {
        let tls = nodes.iter().filter(|n| is_tls(n)).count();
        if tls != 0 && tls != nodes.len() {
            problems.push(ConfigProblem::new(
                &url_path,
                "cluster nodes must all use TLS (`rediss://`) or all not",
            ));
        }
    }

    if let Some(p) = password {
        if p.expose().is_empty() {
            problems.push(ConfigProblem::new(
                format!("{path}.password"),
                "empty password (is its ${VAR} unset?); leave `password` out for none",
            ));
        }
    }

    if key_prefix.len() > MAX_KEY_PREFIX_LEN {
        problems.push(ConfigProblem::new(
            format!("{path}.key_prefix"),
            format!(
                "at most {MAX_KEY_PREFIX_LEN} bytes (got {}): it is repeated in every key",
                key_prefix.len()
            ),
        ));
    }
    if key_prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        problems.push(ConfigProblem::new(
            format!("{path}.key_prefix"),
            "no spaces or control characters (keys must stay easy to type in redis-cli)",
        ));
    }
    if cluster && (key_prefix.contains('{') || key_prefix.contains('}')) {
        problems.push(ConfigProblem::new(
            format!("{path}.key_prefix"),
            "with `cluster: true` a `{hash tag}` in the prefix would put every key on one node",
        ));
    }

    check_duration(*timeout, MAX_TIMEOUT, &format!("{path}.timeout"), problems);
    check_duration(
        *connect_timeout,
        MAX_CONNECT_TIMEOUT,
        &format!("{path}.connect_timeout"),
        problems,
    );

    (problems.len() == before).then(|| RedisConfig {
        endpoints: url.as_slice().iter().map(|u| redact_url(u)).collect(),
        nodes,
        cluster,
        password: password.clone(),
        key_prefix: key_prefix.clone(),
        timeout: *timeout,
        connect_timeout: *connect_timeout,
    })
}

fn check_duration(d: Duration, max: Duration, key: &str, problems: &mut Vec<ConfigProblem>) {
    if d.is_zero() {
        problems.push(ConfigProblem::new(key, "must be more than 0"));
    } else if d > max {
        problems.push(ConfigProblem::new(
            key,
            format!(
                "at most {} (got {})",
                humantime::format_duration(max),
                humantime::format_duration(d)
            ),
        ));
    }
}

/// Parse one URL without touching the network. The message never repeats
/// the URL (it may hold a password).
fn check_url(u: &str, cluster: bool) -> Result<ConnectionInfo, String> {
    let scheme = u.split_once("://").map(|(s, _)| s);
    match scheme {
        Some(s) if SCHEMES.contains(&s) => {}
        Some(s) => {
            return Err(format!(
                "scheme must be `redis://`, `rediss://` or `redis+unix://` (got `{s}://`)"
            ))
        }
        None => return Err("not a URL: expected `redis://HOST:PORT`".to_owned()),
    }
    let info = u
        .into_connection_info()
        .map_err(|e| format!("not a valid Redis URL: {e}"))?;
    match info.addr() {
        ConnectionAddr::TcpTls { insecure: true, .. } => {
            return Err(
                "`#insecure` would turn off certificate verification; make the server's CA trusted instead"
                    .to_owned(),
            )
        }
        ConnectionAddr::Unix(_) if cluster => {
            return Err("a cluster node is a `redis://` or `rediss://` URL".to_owned())
        }
        _ => {}
    }
    if cluster && info.redis_settings().db() != 0 {
        return Err("Redis Cluster has only database 0".to_owned());
    }
    Ok(info)
}

fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

/// Validated `state.redis`, what [`RedisStore::new`] takes.
#[derive(Clone)]
pub struct RedisConfig {
    /// The URLs as written, passwords replaced by `***`: for logs,
    /// `explain` and Debug.
    pub endpoints: Vec<String>,
    /// The parsed URLs (one, or the cluster's seed nodes).
    pub nodes: Vec<ConnectionInfo>,
    pub cluster: bool,
    /// Overrides the URLs' passwords.
    pub password: Option<Secret>,
    pub key_prefix: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl RedisConfig {
    /// Settings for `url` with the defaults of everything else (tests,
    /// tools). The URL is checked as [`build`] would.
    pub fn new(url: &str) -> Result<Self, String> {
        let info = check_url(url, false)?;
        Ok(Self {
            endpoints: vec![redact_url(url)],
            nodes: vec![info],
            cluster: false,
            password: None,
            key_prefix: raw::DEFAULT_KEY_PREFIX.to_owned(),
            timeout: raw::DEFAULT_TIMEOUT,
            connect_timeout: raw::DEFAULT_CONNECT_TIMEOUT,
        })
    }
}

// Hand-written: `ConnectionInfo` holds the password.
impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("endpoints", &self.endpoints)
            .field("cluster", &self.cluster)
            .field("password", &self.password)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> raw::StateSection {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn problems(yaml: &str) -> Vec<(String, String)> {
        match check(&section(yaml), "state") {
            Ok(_) => Vec::new(),
            Err(ps) => ps.into_iter().map(|p| (p.path, p.message)).collect(),
        }
    }

    /// Exactly one problem, at `path`, whose message contains `needle`.
    fn assert_one(yaml: &str, path: &str, needle: &str) {
        let ps = problems(yaml);
        assert_eq!(ps.len(), 1, "{yaml}: {ps:?}");
        assert_eq!(ps[0].0, path, "{yaml}: {ps:?}");
        assert!(ps[0].1.contains(needle), "{yaml}: {ps:?}");
    }

    #[test]
    fn memory_is_the_default_and_builds_nothing() {
        assert!(build(&section("{}"), "state").unwrap().is_none());
        assert!(build(&section("backend: memory"), "state")
            .unwrap()
            .is_none());
        // A policy without a store is harmless (switching backends should
        // not require deleting it).
        assert!(build(&section("on_unavailable: { dpop: allow }"), "state")
            .unwrap()
            .is_none());
    }

    #[test]
    fn redis_builds_without_io_or_runtime() {
        // No tokio runtime here, and nothing listens on port 1.
        let built = build(
            &section(
                "backend: redis\nredis: { url: 'redis://127.0.0.1:1', password: pw }\non_unavailable: { ratelimit: deny }",
            ),
            "state",
        )
        .unwrap()
        .unwrap();
        assert_eq!(built.store.backend(), "redis");
        assert_eq!(
            built.on_unavailable.ratelimit,
            ztgate_filter::Unavailable::Deny
        );
        assert_eq!(built.on_unavailable.dpop, ztgate_filter::Unavailable::Deny);
        let dbg = format!("{built:?}");
        assert!(!dbg.contains("pw"), "{dbg}");

        let cluster = build(
            &section(
                "backend: redis\nredis: { url: ['redis://127.0.0.1:1', 'redis://127.0.0.1:2'], cluster: true }",
            ),
            "state",
        )
        .unwrap()
        .unwrap();
        assert_eq!(cluster.store.backend(), "redis");

        for url in [
            "rediss://cache.internal:6380/2",
            "redis+unix:///run/redis.sock",
        ] {
            let yaml = format!("backend: redis\nredis: {{ url: '{url}' }}");
            assert!(build(&section(&yaml), "state").unwrap().is_some(), "{url}");
        }
    }

    #[test]
    fn redis_section_presence() {
        assert_one(
            "backend: redis",
            "state.backend",
            "needs a `redis:` section",
        );
        assert_one(
            "redis: { url: 'redis://h' }",
            "state.redis",
            "only used with `backend: redis`",
        );
    }

    #[test]
    fn url_problems() {
        let r = |rest: &str| format!("backend: redis\nredis: {{ {rest} }}");
        assert_one(
            &r("url: 'http://h:6379'"),
            "state.redis.url",
            "scheme must be",
        );
        assert_one(
            &r("url: 'valkey://h'"),
            "state.redis.url",
            "(got `valkey://`)",
        );
        assert_one(&r("url: 'h:6379'"), "state.redis.url", "not a URL");
        assert_one(
            &r("url: 'redis://h/notadb'"),
            "state.redis.url",
            "not a valid Redis URL",
        );
        assert_one(
            &r("url: 'redis://0.0.0.0'"),
            "state.redis.url",
            "not a valid Redis URL",
        );
        assert_one(
            &r("url: 'rediss://h/#insecure'"),
            "state.redis.url",
            "#insecure",
        );
        assert_one(
            &r("url: ['redis://a', 'redis://b']"),
            "state.redis.url",
            "needs `cluster: true`",
        );
        assert_one(
            &r("url: [], cluster: true"),
            "state.redis.url",
            "at least one",
        );
        assert_one(
            &r("url: ['redis://a', 'redis:/b'], cluster: true"),
            "state.redis.url[1]",
            "",
        );
        assert_one(
            &r("url: ['redis://a', 'redis+unix:///s'], cluster: true"),
            "state.redis.url[1]",
            "a cluster node is",
        );
        assert_one(
            &r("url: ['redis://a/3'], cluster: true"),
            "state.redis.url[0]",
            "only database 0",
        );
        assert_one(
            &r("url: ['redis://a', 'rediss://b'], cluster: true"),
            "state.redis.url",
            "all use TLS",
        );
        // A single URL is fine with `cluster: true` (one seed node).
        assert!(problems(&r("url: 'redis://a', cluster: true")).is_empty());
    }

    #[test]
    fn a_url_password_is_never_repeated_in_a_message() {
        let ps = problems("backend: redis\nredis: { url: 'redis://:hunter2@h/x' }");
        assert_eq!(ps.len(), 1);
        assert!(!ps[0].1.contains("hunter2"), "{ps:?}");
        let ps = problems("backend: redis\nredis: { url: 'http://:hunter2@h/' }");
        assert!(!ps[0].1.contains("hunter2"), "{ps:?}");
    }

    #[test]
    fn timeout_problems() {
        let r = |rest: &str| format!("backend: redis\nredis: {{ url: 'redis://h', {rest} }}");
        assert_one(&r("timeout: 0s"), "state.redis.timeout", "more than 0");
        assert_one(
            &r("timeout: 2s"),
            "state.redis.timeout",
            "at most 1s (got 2s)",
        );
        assert!(problems(&r("timeout: 1s")).is_empty());
        assert!(problems(&r("timeout: 500us")).is_empty());
        assert_one(
            &r("connect_timeout: 0ms"),
            "state.redis.connect_timeout",
            "more than 0",
        );
        assert_one(
            &r("connect_timeout: 1m"),
            "state.redis.connect_timeout",
            "at most 30s",
        );
    }

    #[test]
    fn key_prefix_and_password_problems() {
        let r = |rest: &str| format!("backend: redis\nredis: {{ url: 'redis://h', {rest} }}");
        let long = "p".repeat(65);
        assert_one(
            &r(&format!("key_prefix: {long}")),
            "state.redis.key_prefix",
            "at most 64 bytes (got 65)",
        );
        assert!(problems(&r(&format!("key_prefix: {}", "p".repeat(64)))).is_empty());
        assert_one(
            &r("key_prefix: 'zt gate:'"),
            "state.redis.key_prefix",
            "no spaces",
        );
        assert_one(
            &r("key_prefix: \"zt\\tgate:\""),
            "state.redis.key_prefix",
            "no spaces",
        );
        assert_one(
            &r("key_prefix: '{zt}:', cluster: true"),
            "state.redis.key_prefix",
            "hash tag",
        );
        assert!(problems(&r("key_prefix: '{zt}:'")).is_empty());
        assert!(problems(&r("key_prefix: ''")).is_empty());
        assert_one(&r("password: ''"), "state.redis.password", "empty password");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let ps = problems(
            "backend: redis\nredis: { url: ['ftp://a', 'redis://b'], timeout: 0s, connect_timeout: 2m, key_prefix: 'a b', password: '' }",
        );
        let paths: Vec<&str> = ps.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "state.redis.url",
                "state.redis.url[0]",
                "state.redis.password",
                "state.redis.key_prefix",
                "state.redis.timeout",
                "state.redis.connect_timeout",
            ],
            "{ps:?}"
        );
    }

    #[test]
    fn config_debug_hides_passwords() {
        let c = check(
            &section("backend: redis\nredis: { url: 'redis://:inurl@h', password: inconfig }"),
            "state",
        )
        .unwrap()
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("inurl") && !dbg.contains("inconfig"), "{dbg}");
        assert_eq!(c.endpoints, ["redis://:***@h"]);
    }
}
