//! The `state:` section exactly as written in YAML. Checks beyond the
//! shape (URL schemes, ranges, what goes with what) are in
//! [`crate::build()`], which reports every problem with its key path.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use ztgate_filter::Unavailable;

/// Per-operation timeout when `state.redis.timeout` is not set: 10 ms.
///
/// Why: this is added to a request's latency whenever the store is slow,
/// up to three times (DPoP, device, rate limit), so it must be small; a
/// healthy same-zone Redis answers in well under 1 ms and its p99.9 under
/// load stays within a few ms, so 10 ms only cuts off a store that is
/// really in trouble. (Envoy's rate-limit service call defaults to 20 ms
/// for a whole gRPC call; this is one Redis command.)
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10);
/// Bound of one connection attempt (TCP, TLS, `AUTH`) when
/// `state.redis.connect_timeout` is not set: 1 s. Connecting happens in
/// the background, never on a request's path, so it may take longer than
/// an operation; a second is plenty for a reachable server and bounds how
/// long an unreachable one keeps a connection attempt pending.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Prefix of every key when `state.redis.key_prefix` is not set, so that
/// ztgate's keys can share a Redis with other applications and be found
/// (`SCAN MATCH ztgate:*`).
pub const DEFAULT_KEY_PREFIX: &str = "ztgate:";

/// `state:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct StateSection {
    /// Where shared state lives. Default `memory`: each process alone.
    #[serde(default)]
    pub backend: Backend,
    /// Required with `backend: redis`, refused otherwise.
    #[serde(default)]
    pub redis: Option<RedisSection>,
    /// What each use does when the store has no answer.
    #[serde(default)]
    pub on_unavailable: OnUnavailableSection,
}

/// `state.backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// In-process structures: nothing is shared between replicas.
    #[default]
    Memory,
    /// A Redis server or cluster shared by every replica.
    Redis,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
        }
    }
}

/// `state.redis`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RedisSection {
    /// One URL (`redis://`, `rediss://`, `redis+unix://`), or with
    /// `cluster: true` a list of seed nodes.
    pub url: Urls,
    /// Redis Cluster (the URLs are seed nodes; the topology is discovered).
    #[serde(default)]
    pub cluster: bool,
    /// Overrides a password in the URL. Already `${VAR}`-substituted by the
    /// gateway; never printed.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Prepended to every key.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Bound of one operation (see [`DEFAULT_TIMEOUT`]).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Bound of one connection attempt (see [`DEFAULT_CONNECT_TIMEOUT`]).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

fn default_key_prefix() -> String {
    DEFAULT_KEY_PREFIX.to_owned()
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

/// `state.redis.url`: a string or a list of strings, kept apart so that
/// `build` can refuse a list without `cluster: true`.
#[derive(Clone, PartialEq, Eq)]
pub enum Urls {
    One(String),
    List(Vec<String>),
}

impl Urls {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Urls::One(u) => std::slice::from_ref(u),
            Urls::List(l) => l,
        }
    }
}

/// URLs may carry a password (`redis://:pw@host`): Debug shows them with
/// the password replaced.
impl fmt::Debug for Urls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Urls::One(u) => f.debug_tuple("One").field(&redact_url(u)).finish(),
            Urls::List(l) => f
                .debug_tuple("List")
                .field(&l.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

// Hand-written rather than `#[serde(untagged)]`, whose error ("data did not
// match any variant") would not tell the user what is expected.
impl<'de> Deserialize<'de> for Urls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct UrlsVisitor;

        impl<'de> Visitor<'de> for UrlsVisitor {
            type Value = Urls;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Redis URL or a list of Redis URLs")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Urls, E> {
                Ok(Urls::One(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Urls, E> {
                Ok(Urls::One(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Urls, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(u) = seq.next_element::<String>()? {
                    out.push(u);
                }
                Ok(Urls::List(out))
            }
        }

        d.deserialize_any(UrlsVisitor)
    }
}

/// A secret from the config (`state.redis.password`). Debug prints `***`,
/// so that a config dumped with `{:?}` (or a panic message) never shows
/// it; the value is only read through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself: only to hand it to the Redis client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `state.on_unavailable`: each use optional, defaults from
/// [`ztgate_filter::OnUnavailable::default`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct OnUnavailableSection {
    #[serde(default)]
    pub dpop: Option<Unavailable>,
    #[serde(default)]
    pub first_seen: Option<Unavailable>,
    #[serde(default)]
    pub ratelimit: Option<Unavailable>,
}

impl OnUnavailableSection {
    /// The policy, with the defaults filled in.
    pub fn resolve(&self) -> ztgate_filter::OnUnavailable {
        let d = ztgate_filter::OnUnavailable::default();
        ztgate_filter::OnUnavailable {
            dpop: self.dpop.unwrap_or(d.dpop),
            first_seen: self.first_seen.unwrap_or(d.first_seen),
            ratelimit: self.ratelimit.unwrap_or(d.ratelimit),
        }
    }
}

/// `url` with the password of its user-info (`scheme://user:PASSWORD@…`)
/// replaced by `***`, for messages and logs. A URL without `@` in its
/// authority is returned as is.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            let user = match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                // `redis://secret@host`: redis-rs reads a lone user-info as
                // the password, so hide it too.
                None => "***".to_owned(),
            };
            format!("{user}{host}")
        }
        None => authority.to_owned(),
    };
    // A `redis+unix:///path?pass=…` query may carry a password too.
    format!("{scheme}://{authority}{}", redact_query_password(tail))
}

fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let query = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k @ ("pass" | "password"), _)) => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{path}?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<StateSection, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    #[test]
    fn defaults() {
        let s = parse("{}").unwrap();
        assert_eq!(s.backend, Backend::Memory);
        assert!(s.redis.is_none());
        assert_eq!(
            s.on_unavailable.resolve(),
            ztgate_filter::OnUnavailable::default()
        );

        let s = parse("backend: redis\nredis: { url: redis://127.0.0.1:6379 }").unwrap();
        let r = s.redis.unwrap();
        assert_eq!(r.url, Urls::One("redis://127.0.0.1:6379".into()));
        assert!(!r.cluster);
        assert!(r.password.is_none());
        assert_eq!(r.key_prefix, "ztgate:");
        assert_eq!(r.timeout, Duration::from_millis(10));
        assert_eq!(r.connect_timeout, Duration::from_secs(1));
    }

    #[test]
    fn full_section() {
        let s = parse(
            r#"
backend: redis
redis:
  url: [redis://a:7000, redis://b:7000]
  cluster: true
  password: hunter2
  key_prefix: "gw1:"
  timeout: 25ms
  connect_timeout: 2s
on_unavailable: { dpop: allow, ratelimit: deny }
"#,
        )
        .unwrap();
        let r = s.redis.clone().unwrap();
        assert_eq!(r.url.as_slice(), ["redis://a:7000", "redis://b:7000"]);
        assert!(r.cluster);
        assert_eq!(r.password.as_ref().map(Secret::expose), Some("hunter2"));
        assert_eq!(r.key_prefix, "gw1:");
        assert_eq!(r.timeout, Duration::from_millis(25));
        assert_eq!(r.connect_timeout, Duration::from_secs(2));
        let p = s.on_unavailable.resolve();
        assert_eq!(p.dpop, Unavailable::Allow);
        assert_eq!(p.first_seen, Unavailable::Deny);
        assert_eq!(p.ratelimit, Unavailable::Deny);
        // Never printed.
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("Secret(***)"), "{dbg}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(parse("backend: redis\nredis: { url: redis://x, pasword: y }").is_err());
        assert!(parse("bakend: redis").is_err());
        assert!(parse("backend: etcd").is_err());
        assert!(parse("on_unavailable: { dpop: maybe }").is_err());
        assert!(parse("on_unavailable: { replay: deny }").is_err());
        assert!(parse("backend: redis\nredis: { url: redis://x, timeout: soon }").is_err());
        let e = parse("backend: redis\nredis: { url: 5 }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a Redis URL or a list of Redis URLs"), "{e}");
        let e = parse("backend: redis\nredis: { cluster: true }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("url"), "{e}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://:pw@host:6379"),
            "redis://:***@host:6379"
        );
        assert_eq!(
            redact_url("rediss://user:p%40ss@host/1"),
            "rediss://user:***@host/1"
        );
        assert_eq!(redact_url("redis://pw@host"), "redis://***@host");
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=pw"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        let dbg = format!("{:?}", Urls::List(vec!["redis://:pw@a".into()]));
        assert!(!dbg.contains("pw@"), "{dbg}");
    }
}
