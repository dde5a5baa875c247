//! Upstream pools: backends, the TLS settings to reach them, health and
//! selection.
//!
//! A pool is built from config once per generation; selection is lock-free
//! (atomics only). Backend health lives in [`health::BackendHealth`], shared
//! across generations; [`checker::HealthChecker`] probes the pools of the
//! current generation. Backend names stand for every address they resolve
//! to and are looked up again every `dns_refresh` ([`resolve`]); the pool's
//! member set is swapped whole, so a selection always sees one consistent set.

pub mod balance;
pub mod checker;
pub mod health;
pub mod probe;
pub mod resolve;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use pingora::protocols::ALPN;
use pingora::tls::x509::X509;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;
use ztgate_filter::{BuildContext, ConfigProblem, Facts};

use crate::config::raw;
use crate::tls::material::{self, CertAndKey};
pub use health::{BackendHealth, Lease};
use resolve::BackendSpec;

/// How to reach a pool's backends over TLS.
pub struct PoolTls {
    pub sni: String,
    pub ca: Option<Arc<Box<[X509]>>>,
    pub client: Option<Arc<CertKey>>,
    /// With `spiffe.use_for: [upstream]` and no `cert`/`key`: the gateway's
    /// SVID from the Workload API, current at each new connection.
    pub svid: Option<Arc<crate::spiffe::WorkloadSource>>,
    /// `notAfter` of the client certificate, for the expiry gauge.
    pub client_not_after: Option<std::time::SystemTime>,
}

/// Active health-check settings of a pool.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    pub service: String,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// The backends a pool has now: what its entries resolved to last.
pub struct Members {
    pub backends: Vec<SocketAddr>,
    /// Health of each backend (same order as `backends`).
    health: Vec<Arc<BackendHealth>>,
    weights: Vec<usize>,
    /// Stable per-backend ids for rendezvous hashing.
    ids: Vec<u64>,
    /// Backends repeated by weight, interleaved, for round-robin.
    schedule: Vec<usize>,
}

impl Members {
    fn new(pool: &str, resolved: &[(SocketAddr, usize)]) -> Self {
        let backends: Vec<SocketAddr> = resolved.iter().map(|(a, _)| *a).collect();
        let weights: Vec<usize> = resolved.iter().map(|(_, w)| *w).collect();
        Members {
            schedule: balance::interleave(&weights),
            // Health follows the address: a backend that stays across a
            // refresh or a reload keeps its state.
            health: backends
                .iter()
                .map(|a| BackendHealth::shared(pool, *a))
                .collect(),
            ids: backends
                .iter()
                .map(|a| balance::fnv1a(a.to_string().as_bytes()))
                .collect(),
            weights,
            backends,
        }
    }

    fn same_as(&self, resolved: &[(SocketAddr, usize)]) -> bool {
        self.backends.len() == resolved.len()
            && self
                .backends
                .iter()
                .zip(&self.weights)
                .zip(resolved)
                .all(|((a, w), (ra, rw))| a == ra && w == rw)
    }

    /// Each backend with its health state, for the checker.
    pub fn backend_health(&self) -> impl Iterator<Item = (SocketAddr, &Arc<BackendHealth>)> {
        self.backends.iter().copied().zip(self.health.iter())
    }
}

/// One upstream pool.
pub struct Pool {
    pub name: Arc<str>,
    members: ArcSwap<Members>,
    /// The `backends:` entries, kept to look names up again.
    specs: Vec<BackendSpec>,
    /// How often names are looked up again; `None` when there are no names
    /// or `dns_refresh: 0s`.
    pub dns_refresh: Option<Duration>,
    /// A lookup is running (lookups of one pool never overlap).
    resolving: AtomicBool,
    next: AtomicUsize,
    pub tls: Option<PoolTls>,
    pub connect_timeout: Duration,
    pub request_timeout: Option<Duration>,
    pub max_streams: usize,
    pub lb: raw::LbPolicy,
    pub hash_on: Option<raw::HashOn>,
    pub health_check: Option<HealthCheck>,
    /// Passive ejection: consecutive connect failures (0 = off) and for how long.
    pub passive_failures: u32,
    pub passive_ejection: Duration,
}

impl Pool {
    /// Build a pool, reporting every problem under `upstreams.NAME`.
    pub fn build(
        name: &str,
        raw: &raw::Upstream,
        ctx: &BuildContext,
    ) -> Result<Pool, Vec<ConfigProblem>> {
        let path = format!("upstreams.{name}");
        let mut problems = Vec::new();
        let mut specs = Vec::new();
        if raw.backends.is_empty() {
            problems.push(ConfigProblem::new(
                format!("{path}.backends"),
                "a pool needs at least one backend",
            ));
        }
        for (i, b) in raw.backends.iter().enumerate() {
            let at = format!("{path}.backends[{i}]");
            if b.weight() == 0 {
                problems.push(ConfigProblem::new(
                    format!("{at}.weight"),
                    "weight must be at least 1",
                ));
            }
            specs.push(BackendSpec::new(b.address(), b.weight()));
        }
        // Resolved here and by the checker, never per request: Pingora's
        // HttpPeer::new would panic on a DNS failure at request time (notes §5).
        let resolved = match resolve::resolve_all(&specs) {
            Ok(r) => r,
            Err(errs) => {
                for (i, e) in errs {
                    problems.push(ConfigProblem::new(
                        format!("{path}.backends[{i}]"),
                        e.to_string(),
                    ));
                }
                Vec::new()
            }
        };
        let tls = match &raw.tls {
            None => None,
            Some(t) => match pool_tls(t, ctx, &format!("{path}.tls")) {
                Ok(t) => Some(t),
                Err(mut p) => {
                    problems.append(&mut p);
                    None
                }
            },
        };
        if raw.max_streams_per_connection == 0 {
            problems.push(ConfigProblem::new(
                format!("{path}.max_streams_per_connection"),
                "must be at least 1",
            ));
        }
        match (raw.lb, raw.hash_on) {
            (raw::LbPolicy::ConsistentHash, None) => problems.push(ConfigProblem::new(
                format!("{path}.hash_on"),
                "consistent_hash needs `hash_on: subject | spiffe_id | fingerprint`",
            )),
            (raw::LbPolicy::RoundRobin | raw::LbPolicy::LeastConnections, Some(_)) => problems
                .push(ConfigProblem::new(
                    format!("{path}.hash_on"),
                    "only used with `lb: consistent_hash`",
                )),
            _ => {}
        }
        let health_check = raw
            .health_check
            .as_ref()
            .map(|h| health_settings(h, &format!("{path}.health_check"), &mut problems));
        if raw.passive.failures > 0 && raw.passive.ejection.is_zero() {
            problems.push(ConfigProblem::new(
                format!("{path}.passive.ejection"),
                "must be positive (set `failures: 0` to turn passive ejection off)",
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let has_names = specs.iter().any(BackendSpec::is_name);
        Ok(Pool {
            name: Arc::from(name),
            members: ArcSwap::from_pointee(Members::new(name, &resolved)),
            specs,
            dns_refresh: (has_names && !raw.dns_refresh.is_zero()).then_some(raw.dns_refresh),
            resolving: AtomicBool::new(false),
            next: AtomicUsize::new(0),
            tls,
            connect_timeout: raw.connect_timeout,
            request_timeout: (!raw.request_timeout.is_zero()).then_some(raw.request_timeout),
            max_streams: raw.max_streams_per_connection,
            lb: raw.lb,
            hash_on: raw.hash_on,
            health_check,
            passive_failures: raw.passive.failures,
            passive_ejection: raw.passive.ejection,
        })
    }

    /// The backends the pool has now.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// The `backends:` entries, for a fresh lookup.
    pub fn specs(&self) -> &[BackendSpec] {
        &self.specs
    }

    /// Claim the pool's lookup slot; `false` while a lookup is running.
    pub fn start_resolve(&self) -> bool {
        !self.resolving.swap(true, Ordering::AcqRel)
    }

    /// Install what the entries resolve to now (releasing the lookup slot).
    /// Returns whether the member set changed.
    pub fn resolved(&self, resolved: &[(SocketAddr, usize)]) -> bool {
        let changed = !self.members.load().same_as(resolved);
        if changed {
            self.members
                .store(Arc::new(Members::new(&self.name, resolved)));
        }
        self.resolving.store(false, Ordering::Release);
        changed
    }

    /// Release the lookup slot after a failed lookup (members unchanged).
    pub fn resolve_failed(&self) {
        self.resolving.store(false, Ordering::Release);
    }

    /// Whether backend `i` of `m` may take a call now.
    fn usable(&self, m: &Members, i: usize, now: u64) -> bool {
        m.health
            .get(i)
            .is_some_and(|h| h.available(self.health_check.is_some(), now))
    }

    /// Backends that may take calls now.
    pub fn healthy_count(&self) -> usize {
        let m = self.members.load();
        let now = health::now_ms();
        (0..m.backends.len())
            .filter(|&i| self.usable(&m, i, now))
            .count()
    }

    /// The identity `consistent_hash` keys on, if the request has it.
    fn hash_key<'f>(&self, facts: &'f Facts) -> Option<&'f str> {
        match self.hash_on? {
            raw::HashOn::Subject => facts.subject(),
            raw::HashOn::SpiffeId => facts.spiffe_id(),
            raw::HashOn::Fingerprint => facts.fingerprint(),
        }
    }

    /// Pick a usable backend not in `tried` by the pool's policy. `None`
    /// means no healthy backend. A call without the hashed identity falls
    /// back to round-robin (it has nothing to stick to).
    pub fn select(&self, facts: &Facts, tried: &[SocketAddr]) -> Option<Lease> {
        let m = self.members.load();
        let now = health::now_ms();
        let usable = |i: usize| {
            self.usable(&m, i, now) && m.backends.get(i).is_some_and(|a| !tried.contains(a))
        };
        let rr = || {
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let n = m.schedule.len().max(1);
            balance::round_robin(&m.schedule, start % n, usable)
        };
        let i = match self.lb {
            raw::LbPolicy::RoundRobin => rr(),
            raw::LbPolicy::LeastConnections => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % m.backends.len().max(1);
                balance::least_connections(
                    &m.weights,
                    |i| m.health.get(i).map_or(0, |h| h.in_flight()),
                    start,
                    usable,
                )
            }
            raw::LbPolicy::ConsistentHash => match self.hash_key(facts) {
                Some(k) => balance::rendezvous(k.as_bytes(), &m.ids, &m.weights, usable),
                None => rr(),
            },
        }?;
        let addr = *m.backends.get(i)?;
        let health = m.health.get(i)?.clone();
        Some(Lease::new(addr, health))
    }

    /// Whether a retry after a connect failure has somewhere else to go.
    pub fn has_other(&self, tried: &[SocketAddr]) -> bool {
        let m = self.members.load();
        let now = health::now_ms();
        (0..m.backends.len()).any(|i| {
            self.usable(&m, i, now) && m.backends.get(i).is_some_and(|a| !tried.contains(a))
        })
    }

    /// The proxy could not connect to the lease's backend.
    pub fn connect_failed(&self, lease: &Lease) {
        if lease
            .health()
            .connect_failed(self.passive_failures, self.passive_ejection)
        {
            tracing::warn!(
                upstream = %self.name,
                backend = %lease.addr,
                ejection = ?self.passive_ejection,
                "backend ejected after consecutive connect failures"
            );
        }
    }

    /// The `:authority` to send a backend: the SNI name over TLS, else the address.
    pub fn authority(&self, addr: SocketAddr) -> String {
        match &self.tls {
            Some(t) => t.sni.clone(),
            None => addr.to_string(),
        }
    }

    /// A Pingora peer for one backend of this pool.
    pub fn peer(&self, addr: SocketAddr, read_timeout: Option<Duration>) -> HttpPeer {
        let mut peer = match &self.tls {
            None => HttpPeer::new(addr, false, String::new()),
            Some(t) => {
                let client = t.client.clone().or_else(|| {
                    t.svid
                        .as_ref()
                        .and_then(|s| s.latest())
                        .and_then(|c| c.upstream.clone())
                });
                let mut p = match client {
                    Some(ck) => HttpPeer::new_mtls(addr, t.sni.clone(), ck),
                    None => HttpPeer::new(addr, true, t.sni.clone()),
                };
                p.options.ca = t.ca.clone();
                p.options.verify_cert = true;
                p.options.verify_hostname = true;
                p
            }
        };
        // gRPC is HTTP/2 only: h2c prior knowledge, or ALPN h2 over TLS.
        peer.options.alpn = ALPN::H2;
        peer.options.max_h2_streams = self.max_streams;
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout * 2);
        peer.options.h2_ping_interval = Some(Duration::from_secs(30));
        peer.options.idle_timeout = Some(Duration::from_secs(90));
        // Per-read timeout only when the call has a deadline: it would kill
        // idle but healthy long-lived streams otherwise.
        peer.options.read_timeout = read_timeout;
        peer
    }
}

fn pool_tls(
    t: &raw::UpstreamTls,
    ctx: &BuildContext,
    path: &str,
) -> Result<PoolTls, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let ca = match &t.ca {
        None => None,
        Some(p) => match material::load_certs(&ctx.resolve(p)) {
            Ok(certs) => Some(Arc::new(certs.into_boxed_slice())),
            Err(e) => {
                problems.push(ConfigProblem::new(format!("{path}.ca"), e.to_string()));
                None
            }
        },
    };
    if t.sni.is_empty() {
        problems.push(ConfigProblem::new(
            format!("{path}.sni"),
            "must name the backend's server name",
        ));
    }
    let (client, client_not_after) = match (&t.cert, &t.key) {
        (None, None) => (None, None),
        (Some(c), Some(k)) => match CertAndKey::load(&ctx.resolve(c), &ctx.resolve(k)) {
            Ok(ck) => {
                let na = ck.not_after();
                (Some(Arc::new(CertKey::new(ck.chain, ck.key))), na)
            }
            Err(errs) => {
                for (part, e) in errs {
                    problems.push(ConfigProblem::new(
                        format!("{path}.{}", part.key_name()),
                        e.to_string(),
                    ));
                }
                (None, None)
            }
        },
        _ => {
            problems.push(ConfigProblem::new(
                path.to_owned(),
                "`cert` and `key` must be given together",
            ));
            (None, None)
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(PoolTls {
        sni: t.sni.clone(),
        ca,
        client,
        svid: None,
        client_not_after,
    })
}

fn health_settings(
    h: &raw::HealthCheck,
    path: &str,
    problems: &mut Vec<ConfigProblem>,
) -> HealthCheck {
    if h.interval.is_zero() {
        problems.push(ConfigProblem::new(
            format!("{path}.interval"),
            "must be positive",
        ));
    }
    if h.timeout.is_zero() {
        problems.push(ConfigProblem::new(
            format!("{path}.timeout"),
            "must be positive",
        ));
    }
    for (key, v) in [
        ("healthy_threshold", h.healthy_threshold),
        ("unhealthy_threshold", h.unhealthy_threshold),
    ] {
        if v == 0 {
            problems.push(ConfigProblem::new(
                format!("{path}.{key}"),
                "must be at least 1",
            ));
        }
    }
    HealthCheck {
        interval: h.interval,
        timeout: h.timeout,
        service: h.service.clone(),
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(yaml: &str) -> Result<Pool, Vec<ConfigProblem>> {
        let raw: raw::Upstream = serde_yaml::from_str(yaml).unwrap();
        let ctx = BuildContext {
            base_dir: std::env::temp_dir(),
            upstreams: vec!["p".into()],
            pipeline: vec![],
            ..Default::default()
        };
        Pool::build("p", &raw, &ctx)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn literal_backends_are_never_looked_up_again() {
        let p = pool("backends: ['127.0.0.1:1', '127.0.0.1:2']").unwrap();
        assert_eq!(p.dns_refresh, None);
        assert_eq!(
            p.members().backends,
            vec![addr("127.0.0.1:1"), addr("127.0.0.1:2")]
        );
    }

    #[test]
    fn names_expand_to_every_address_and_are_refreshed() {
        let p = pool("backends: ['localhost:7']\ndns_refresh: 2s").unwrap();
        assert_eq!(p.dns_refresh, Some(Duration::from_secs(2)));
        let m = p.members();
        assert!(!m.backends.is_empty());
        assert!(m
            .backends
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 7));
        let off = pool("backends: ['localhost:7']\ndns_refresh: 0s").unwrap();
        assert_eq!(off.dns_refresh, None);
    }

    #[test]
    fn unresolvable_backends_are_config_problems_with_their_index() {
        let errs = pool("backends: ['127.0.0.1:1', 'nope.invalid:1', 'bare']")
            .err()
            .unwrap();
        let keys: Vec<&str> = errs.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            keys,
            vec!["upstreams.p.backends[1]", "upstreams.p.backends[2]"]
        );
    }

    #[test]
    fn a_new_member_set_keeps_the_health_of_backends_that_stay() {
        let p = pool("backends: ['127.0.0.1:41001', '127.0.0.1:41002']\npassive: {failures: 1, ejection: 60s}")
            .unwrap();
        let facts = Facts::default();
        // Eject 41002 passively.
        let lease = loop {
            let l = p.select(&facts, &[]).unwrap();
            if l.addr == addr("127.0.0.1:41002") {
                break l;
            }
        };
        p.connect_failed(&lease);
        drop(lease);
        assert_eq!(p.healthy_count(), 1);

        // Same set: nothing changes.
        assert!(p.start_resolve());
        assert!(!p.resolved(&[(addr("127.0.0.1:41001"), 1), (addr("127.0.0.1:41002"), 1)]));

        // 41001 goes, 41003 comes; 41002 is still ejected.
        assert!(p.start_resolve());
        assert!(!p.start_resolve(), "lookups of one pool never overlap");
        assert!(p.resolved(&[(addr("127.0.0.1:41002"), 1), (addr("127.0.0.1:41003"), 1)]));
        assert_eq!(
            p.members().backends,
            vec![addr("127.0.0.1:41002"), addr("127.0.0.1:41003")]
        );
        assert_eq!(p.healthy_count(), 1);
        for _ in 0..4 {
            assert_eq!(p.select(&facts, &[]).unwrap().addr, addr("127.0.0.1:41003"));
        }
    }
}
