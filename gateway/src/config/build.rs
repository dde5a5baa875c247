//! From the raw config to runtime state, collecting every problem.
//!
//! [`Static`] is what only a restart can change (listen addresses, thread
//! counts); [`Runtime`] is one generation of policy (the filter chain, the
//! pools, the TLS material) that a reload swaps atomically.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use ztgate_filter::{
    BuildContext, Chain, ConfigProblem, Filter, FilterKind, Memory, Mode, SharedState, Stage,
    StateStore,
};

use super::raw::{self, ClientAuth, LogFormat, TlsVersion};
use super::Loaded;
use crate::tls::revocation::CrlSource;
use crate::tls::{FileMaterial, ServerMaterial, WorkloadParts};
use crate::upstream::Pool;

/// Settings fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct Static {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub h2_idle_timeout: Duration,
    pub threads: usize,
    pub work_stealing: bool,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub log_format: LogFormat,
    pub log_level: String,
    /// `(output, queue, max_size)`.
    pub audit: Option<(String, usize, Option<u64>)>,
    /// Files whose change should trigger a reload.
    pub watched: Vec<PathBuf>,
    /// `listener.request_header_timeout`.
    pub request_header_timeout: Duration,
    /// `listener.max_connections`, `listener.max_connections_per_ip`.
    pub max_connections: Option<std::num::NonZeroUsize>,
    pub max_connections_per_ip: Option<std::num::NonZeroUsize>,
}

impl Static {
    /// The keys whose change between `self` (in service) and `next` (a
    /// reloaded file) only a restart applies: a reload names them in a
    /// warning instead of silently ignoring them.
    pub fn restart_only_changes(&self, next: &Static) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |differs: bool, key: &'static str| {
            if differs {
                changed.push(key);
            }
        };
        check(self.listen != next.listen, "listener.address");
        check(self.admin != next.admin, "admin.address");
        check(
            self.client_auth != next.client_auth,
            "listener.tls.client_auth",
        );
        check(
            self.min_version != next.min_version,
            "listener.tls.min_version",
        );
        check(
            self.h2_idle_timeout != next.h2_idle_timeout,
            "listener.h2_idle_timeout",
        );
        check(
            self.request_header_timeout != next.request_header_timeout,
            "listener.request_header_timeout",
        );
        check(
            self.max_connections != next.max_connections,
            "listener.max_connections",
        );
        check(
            self.max_connections_per_ip != next.max_connections_per_ip,
            "listener.max_connections_per_ip",
        );
        check(self.threads != next.threads, "server.threads");
        check(
            self.work_stealing != next.work_stealing,
            "server.work_stealing",
        );
        check(
            self.grace_period != next.grace_period,
            "server.grace_period",
        );
        check(self.log_level != next.log_level, "log.level");
        check(self.audit != next.audit, "audit");
        changed
    }
}

/// One generation of policy.
pub struct Runtime {
    pub chain: Chain,
    pub pools: HashMap<Arc<str>, Arc<Pool>>,
    pub material: Arc<ServerMaterial>,
    pub trusted_proxies: Vec<IpNet>,
    /// `listener.proxy_protocol`: a runtime setting, not a static one, so
    /// the pre-TLS hook reads it per connection together with
    /// `trusted_proxies` and a reload applies to the next connection.
    pub proxy_protocol: bool,
    /// Signs `x-ztgate-assertion`, when configured.
    pub assertion: Option<Arc<crate::assertion::Asserter>>,
    /// The store shared by replicas (`state.backend: redis`), for the
    /// reloader to dial ahead of the first request and for `explain`.
    pub state_store: Option<Arc<ztgate_state::RedisStore>>,
    /// The `policy` filter (also in the chain), for `explain` to show its
    /// input document and answer.
    pub policy: Option<Arc<ztgate_policy::PolicyFilter>>,
    /// `spiffe.workload_api`: its source and the file material its updates
    /// are combined with; `material` above is the composition at build.
    pub workload: Option<Arc<crate::spiffe::Binding>>,
    /// `tracing:` checked (off when `None`); put in force by the process's
    /// `crate::trace::Tracing` at start-up and on each reload.
    pub tracing: Option<crate::trace::Settings>,
}

impl Runtime {
    /// Whether `ip` is in `listener.trusted_proxies`.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        in_any(&self.trusted_proxies, ip)
    }
}

/// `ip` in one of `nets`. On a dual-stack listener (`[::]:…`) an IPv4 peer
/// shows as `::ffff:a.b.c.d`, while trusted CIDRs are written as IPv4: it
/// is matched both ways, or a v4 balancer would silently not be trusted.
fn in_any(nets: &[IpNet], ip: IpAddr) -> bool {
    let canonical = ip.to_canonical();
    nets.iter()
        .any(|n| n.contains(&ip) || n.contains(&canonical))
}

fn addr(s: &str, path: &str, problems: &mut Vec<ConfigProblem>) -> SocketAddr {
    match s.parse() {
        Ok(a) => a,
        Err(_) => {
            problems.push(ConfigProblem::new(
                path,
                format!("`{s}` is not an ip:port address"),
            ));
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
    }
}

/// Collect a section's build result into the problem list.
fn take<T>(r: Result<T, Vec<ConfigProblem>>, problems: &mut Vec<ConfigProblem>) -> Option<T> {
    match r {
        Ok(t) => Some(t),
        Err(mut p) => {
            problems.append(&mut p);
            None
        }
    }
}

/// The longest `listener.tls.ocsp.timeout`.
const OCSP_MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// `listener.tls.ocsp` and `ocsp_stapling`, onto the loaded material. The
/// OCSP cache and each certificate's staple are claimed from `memory`, so a
/// reload keeps them (see `crate::tls::ocsp`, `crate::tls::stapling`).
fn revocation_checks(
    t: &crate::config::raw::ListenerTls,
    material: &mut FileMaterial,
    memory: &Arc<Memory>,
    problems: &mut Vec<ConfigProblem>,
) {
    if let Some(o) = &t.ocsp {
        for (key, d) in [("timeout", o.timeout), ("max_cache_age", o.max_cache_age)] {
            if d.is_zero() {
                problems.push(ConfigProblem::new(
                    format!("listener.tls.ocsp.{key}"),
                    "must be more than 0s",
                ));
            }
        }
        // A cold-cache handshake waits this long, inside Pingora's 60 s
        // limit for a whole handshake.
        if o.timeout > OCSP_MAX_TIMEOUT {
            problems.push(ConfigProblem::new(
                "listener.tls.ocsp.timeout",
                format!(
                    "must be at most {}s: a handshake waits this long for the responder",
                    OCSP_MAX_TIMEOUT.as_secs()
                ),
            ));
        }
        material.ocsp = crate::tls::ocsp::ClientOcsp::new(o, t.client_auth, memory).map(Arc::new);
    }
    if t.ocsp_stapling {
        let Some(identity) = &material.identity else {
            problems.push(ConfigProblem::new(
                "listener.tls.ocsp_stapling",
                "needs listener.tls.cert: the Workload API's SVIDs name no OCSP responder to staple from",
            ));
            return;
        };
        match crate::tls::stapling::Stapler::claim(&identity.chain, memory) {
            Ok(s) => material.stapling = Some(s),
            Err(e) => problems.push(ConfigProblem::new(
                "listener.tls.ocsp_stapling",
                format!("listener.tls.cert: {e}"),
            )),
        }
    }
}

/// Build everything; on failure return every problem found. Long-lived
/// state (keys, caches, counters) is claimed from `memory`, so a reload
/// that passes the process's memory carries it over.
pub fn build(
    loaded: &Loaded,
    memory: &Arc<Memory>,
) -> Result<(Static, Runtime), Vec<ConfigProblem>> {
    let raw = &loaded.raw;
    let mut problems = Vec::new();

    // --- static settings ----------------------------------------------
    let listen = addr(&raw.listener.address, "listener.address", &mut problems);
    let admin = addr(&raw.admin.address, "admin.address", &mut problems);
    if listen == admin && listen.port() != 0 {
        problems.push(ConfigProblem::new(
            "admin.address",
            "must differ from listener.address",
        ));
    }
    if raw.server.threads == 0 {
        problems.push(ConfigProblem::new("server.threads", "must be at least 1"));
    }
    if tracing_subscriber::EnvFilter::try_new(&raw.log.level).is_err() {
        problems.push(ConfigProblem::new(
            "log.level",
            format!("`{}` is not a valid level/filter", raw.log.level),
        ));
    }
    let state = raw
        .state
        .as_ref()
        .and_then(|s| shared_state(s, memory, &mut problems));
    let ctx = BuildContext {
        base_dir: loaded.base_dir.clone(),
        upstreams: raw.upstreams.keys().cloned().collect(),
        pipeline: raw.pipeline.clone(),
        memory: memory.clone(),
        state: state.as_ref().map(|(shared, _)| shared.clone()),
    };

    // --- TLS material ---------------------------------------------------
    let t = &raw.listener.tls;
    let spiffe = raw
        .spiffe
        .as_ref()
        .and_then(|s| crate::spiffe::check(s, &mut problems));
    let (listener_from_api, trust_from_api) = match &spiffe {
        Some(s) => (s.listener, s.trust),
        // A `spiffe:` section with problems: no "cert missing" on top.
        None => (raw.spiffe.is_some(), raw.spiffe.is_some()),
    };
    let identity = listener_identity(t, listener_from_api, &ctx, &mut problems);
    let ca = t.client_ca.as_ref().map(|p| ctx.resolve(p));
    let trust_bundles: Vec<(String, PathBuf)> = raw
        .mtls
        .iter()
        .flat_map(|m| &m.trust_bundles)
        .map(|(td, p)| (td.clone(), ctx.resolve(p)))
        .collect();
    if ca.is_none() && trust_bundles.is_empty() && !trust_from_api {
        problems.push(ConfigProblem::new(
            "listener.tls.client_ca",
            "is required unless mtls.trust_bundles names a bundle per trust domain or spiffe.workload_api supplies the bundles (use_for: [trust])",
        ));
    }
    let crls: Vec<CrlSource> = t
        .crl
        .iter()
        .map(|e| match e {
            raw::CrlEntry::File(p) => CrlSource::file(ctx.resolve(p)),
            raw::CrlEntry::Issued(i) => CrlSource {
                path: ctx.resolve(&i.file),
                issuer: Some(ctx.resolve(&i.issuer)),
            },
        })
        .collect();
    let files = FileMaterial::load(
        identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        ca.as_deref(),
        &trust_bundles,
        &crls,
        // CRLs from a CA the Workload API serves are checked when its
        // bundle arrives.
        !trust_from_api,
    )
    .map(|mut files| {
        revocation_checks(t, &mut files, memory, &mut problems);
        files
    });
    let material = files
        .and_then(|files| match spiffe.clone() {
            None => ServerMaterial::compose(&files, &WorkloadParts::default()).map(|m| (m, None)),
            Some(settings) => {
                let binding = crate::spiffe::Binding::new(settings, files, memory);
                binding.compose().map(|m| (m, Some(Arc::new(binding))))
            }
        })
        .map_err(|errs| {
            for (part, e) in errs {
                problems.push(ConfigProblem::new(part.key_path(), e.to_string()));
            }
        })
        .ok();

    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.listener.trusted_proxies.iter().enumerate() {
        let parsed = p
            .parse::<IpNet>()
            .or_else(|_| p.parse::<IpAddr>().map(IpNet::from));
        match parsed {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => problems.push(ConfigProblem::new(
                format!("listener.trusted_proxies[{i}]"),
                format!("`{p}` is not a CIDR or IP address"),
            )),
        }
    }
    if raw.listener.proxy_protocol && raw.listener.trusted_proxies.is_empty() {
        // A header is only ever read from a trusted peer (anyone else could
        // name any address), so with no trusted peer the setting would do
        // nothing: almost certainly a half-done configuration.
        problems.push(ConfigProblem::new(
            "listener.proxy_protocol",
            "needs listener.trusted_proxies: a PROXY header is only read from a trusted proxy",
        ));
    }

    // --- upstream pools -------------------------------------------------
    let mut pools = HashMap::new();
    // `spiffe.use_for: [upstream]`: the SVID for pools with TLS and no
    // client certificate of their own.
    let svid_source = material
        .as_ref()
        .and_then(|(_, w)| w.as_ref())
        .filter(|w| w.settings.upstream)
        .map(|w| w.source.clone());
    for (name, u) in &raw.upstreams {
        if let Some(mut pool) = take(Pool::build(name, u, &ctx), &mut problems) {
            if let (Some(source), Some(t)) = (&svid_source, pool.tls.as_mut()) {
                if t.client.is_none() {
                    t.svid = Some(source.clone());
                }
            }
            pools.insert(Arc::from(name.as_str()), Arc::new(pool));
        }
    }

    // --- the pipeline -----------------------------------------------------
    let assertion = raw.assertion.as_ref().and_then(|a| {
        let prev: Vec<PathBuf> = a.previous_keys.iter().map(|p| ctx.resolve(p)).collect();
        match crate::assertion::Asserter::load(
            &ctx.resolve(&a.key),
            &prev,
            a.issuer.clone(),
            a.audience.clone(),
            a.ttl,
            memory,
        ) {
            Ok(x) => Some(Arc::new(x)),
            Err(errs) => {
                for e in errs {
                    problems.push(ConfigProblem::new("assertion.key", e.to_string()));
                }
                None
            }
        }
    });
    if raw.assertion.as_ref().is_some_and(|a| a.ttl.is_zero()) {
        problems.push(ConfigProblem::new(
            "assertion.ttl",
            "must be longer than 0s",
        ));
    }
    let mut policy = None;
    let chain = build_chain(raw, &ctx, &mut problems, &mut policy);
    let tracing = raw
        .tracing
        .as_ref()
        .and_then(|t| take(crate::trace::config::check(t, "tracing"), &mut problems));

    if !problems.is_empty() {
        return Err(problems);
    }
    let Some((material, workload)) = material else {
        return Err(vec![ConfigProblem::new(
            "listener.tls",
            "TLS material missing",
        )]);
    };
    let mut watched = vec![loaded.path.clone()];
    watched.extend(identity.into_iter().flat_map(|(c, k)| [c, k]));
    watched.extend(ca);
    watched.extend(trust_bundles.into_iter().map(|(_, p)| p));
    watched.extend(crls.iter().flat_map(|c| c.files().cloned()));
    if let Some(a) = &raw.assertion {
        watched.extend(
            std::iter::once(&a.key)
                .chain(&a.previous_keys)
                .map(|p| ctx.resolve(p)),
        );
    }
    watched.extend(chain.watched_files());
    for u in raw.upstreams.values() {
        if let Some(t) = &u.tls {
            watched.extend(
                t.ca.iter()
                    .chain(&t.cert)
                    .chain(&t.key)
                    .map(|p| ctx.resolve(p)),
            );
        }
    }
    let st = Static {
        listen,
        admin,
        client_auth: raw.listener.tls.client_auth,
        min_version: raw.listener.tls.min_version,
        h2_idle_timeout: raw.listener.h2_idle_timeout,
        threads: raw.server.threads,
        work_stealing: raw.server.work_stealing,
        grace_period: raw.server.grace_period,
        shutdown_timeout: raw.server.shutdown_timeout,
        pid_file: raw.server.pid_file.clone(),
        upgrade_sock: raw.server.upgrade_sock.clone(),
        log_format: raw.log.format,
        log_level: raw.log.level.clone(),
        audit: raw.audit.as_ref().map(|a| {
            let out = if a.output == "stdout" {
                a.output.clone()
            } else {
                ctx.resolve(&a.output).display().to_string()
            };
            (out, a.queue, a.max_size)
        }),
        watched,
        request_header_timeout: raw.listener.request_header_timeout,
        max_connections: raw.listener.max_connections,
        max_connections_per_ip: raw.listener.max_connections_per_ip,
    };
    let rt = Runtime {
        chain,
        pools,
        material: Arc::new(material),
        trusted_proxies,
        proxy_protocol: raw.listener.proxy_protocol,
        assertion,
        state_store: state.map(|(_, store)| store),
        policy,
        workload,
        tracing,
    };
    Ok((st, rt))
}

/// `listener.tls.cert`/`key`, resolved: both, unless the Workload API
/// supplies the listener's identity, in which case neither.
fn listener_identity(
    t: &raw::ListenerTls,
    from_api: bool,
    ctx: &BuildContext,
    problems: &mut Vec<ConfigProblem>,
) -> Option<(PathBuf, PathBuf)> {
    match (&t.cert, &t.key, from_api) {
        (Some(c), Some(k), false) => Some((ctx.resolve(c), ctx.resolve(k))),
        (None, None, true) => None,
        (cert, _, true) => {
            let key_path = if cert.is_some() {
                "listener.tls.cert"
            } else {
                "listener.tls.key"
            };
            problems.push(ConfigProblem::new(
                key_path,
                "leave it out: spiffe.workload_api supplies the listener's certificate and key (use_for: [listener])",
            ));
            None
        }
        (None, _, false) => {
            problems.push(ConfigProblem::new(
                "listener.tls.cert",
                "is required unless spiffe.workload_api supplies the listener's certificate (use_for: [listener])",
            ));
            None
        }
        (Some(_), None, false) => {
            problems.push(ConfigProblem::new(
                "listener.tls.key",
                "is required with listener.tls.cert",
            ));
            None
        }
    }
}

/// `state:` → the store every replica shares, if not `memory`. The store
/// (its connection, its circuit breaker) is claimed from memory by its
/// settings, so a reload that leaves `state.redis` alone keeps it.
fn shared_state(
    section: &ztgate_state::StateSection,
    memory: &Memory,
    problems: &mut Vec<ConfigProblem>,
) -> Option<(SharedState, Arc<ztgate_state::RedisStore>)> {
    let config = take(ztgate_state::check(section, "state"), problems)??;
    // The Debug form redacts passwords; the key must still change when a
    // password does, so a digest of the whole connection info joins it.
    let secret_part = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(format!("{:?}", config.nodes).as_bytes());
        if let Some(p) = &config.password {
            h.update(p.expose().as_bytes());
        }
        hex::encode(h.finalize())
    };
    let key = format!("state.redis\n{config:?}\n{secret_part}");
    match memory.try_claim(&key, || ztgate_state::RedisStore::new(&config)) {
        Ok(store) => Some((
            SharedState {
                store: store.clone() as Arc<dyn StateStore>,
                on_unavailable: section.on_unavailable.resolve(),
            },
            store,
        )),
        Err(e) => {
            problems.push(ConfigProblem::new("state.redis", e.to_string()));
            None
        }
    }
}

fn build_chain(
    raw: &raw::Config,
    ctx: &BuildContext,
    problems: &mut Vec<ConfigProblem>,
    policy: &mut Option<Arc<ztgate_policy::PolicyFilter>>,
) -> Chain {
    let mut stages: Vec<Stage> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    if raw.pipeline.is_empty() {
        problems.push(ConfigProblem::new(
            "pipeline",
            "needs at least the `route` filter",
        ));
    }
    for (i, name) in raw.pipeline.iter().enumerate() {
        let at = format!("pipeline[{i}]");
        if seen.contains(&name.as_str()) {
            problems.push(ConfigProblem::new(at, format!("`{name}` appears twice")));
            continue;
        }
        seen.push(name);
        let Some(kind) = FilterKind::from_name(name) else {
            let known = FilterKind::ALL.map(FilterKind::as_str).join(", ");
            problems.push(ConfigProblem::new(
                at,
                format!("unknown filter `{name}` (known: {known})"),
            ));
            continue;
        };
        if let Some((f, mode)) = build_stage(kind, raw, ctx, &at, problems, policy) {
            stages.push(Stage::new(f, mode));
        }
    }
    if !seen.contains(&FilterKind::Route.as_str()) {
        problems.push(ConfigProblem::new(
            "pipeline",
            "`route` must be in the pipeline: without it no request has an upstream",
        ));
    }
    // A section configured for a filter that never runs is almost always a mistake.
    for kind in FilterKind::ALL {
        if section_present(raw, kind) && !seen.contains(&kind.as_str()) {
            let section = kind.section();
            problems.push(ConfigProblem::new(
                section,
                format!("`{section}` is configured but `{kind}` is not in `pipeline`"),
            ));
        }
    }
    // A route's own policy rule with no `policy` filter to evaluate it
    // would silently allow what the route meant to restrict.
    if !seen.contains(&FilterKind::Policy.as_str()) {
        for (i, r) in raw.routes.iter().enumerate() {
            if r.policy.is_some() {
                problems.push(ConfigProblem::new(
                    format!("routes[{i}].policy"),
                    "a route's policy rule needs `policy` in `pipeline` (and a `policy:` section)",
                ));
            }
        }
    }
    Chain::new(stages).with_store(ctx.state.as_ref().map(|s| s.store.clone()))
}

/// The routes that name their own `policy` decision rule.
fn route_rules(raw: &raw::Config) -> Vec<ztgate_policy::RouteRule> {
    raw.routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.policy.as_ref().map(|p| ztgate_policy::RouteRule {
                route: r.name.clone(),
                decision: p.decision.clone(),
                key: format!("routes[{i}].policy.decision"),
            })
        })
        .collect()
}

/// Whether the config file has a section for `kind`.
fn section_present(raw: &raw::Config, kind: FilterKind) -> bool {
    match kind {
        FilterKind::Sanitize => raw.sanitize.is_some(),
        FilterKind::Mtls => raw.mtls.is_some(),
        FilterKind::Jwt => raw.jwt.is_some(),
        FilterKind::Device => raw.device.is_some(),
        FilterKind::Route => !raw.routes.is_empty(),
        FilterKind::Ratelimit => raw.ratelimit.is_some(),
        FilterKind::Policy => raw.policy.is_some(),
    }
}

/// Build the filter `kind` of `pipeline:` (at key path `at`) from its
/// section, with the mode its stage runs in. Filters whose section has
/// settings the filter cannot do without (`jwt`, `device`) need it
/// written out; the others run on their defaults.
fn build_stage(
    kind: FilterKind,
    raw: &raw::Config,
    ctx: &BuildContext,
    at: &str,
    problems: &mut Vec<ConfigProblem>,
    policy: &mut Option<Arc<ztgate_policy::PolicyFilter>>,
) -> Option<(Box<dyn Filter>, Mode)> {
    let path = kind.section();
    match kind {
        FilterKind::Sanitize => {
            let section = raw.sanitize.clone().unwrap_or_default();
            take(ztgate_sanitize::build(&section, ctx, path), problems)
                .map(|f| (Box::new(f) as Box<dyn Filter>, section.mode))
        }
        FilterKind::Mtls => {
            let section = raw.mtls.clone().unwrap_or_default();
            take(ztgate_mtls::build(&section, ctx, path), problems)
                .map(|f| (Box::new(f) as Box<dyn Filter>, section.mode))
        }
        FilterKind::Jwt => match &raw.jwt {
            None => {
                problems.push(ConfigProblem::new(
                    at,
                    "`jwt` needs a `jwt:` section with at least one issuer",
                ));
                None
            }
            Some(section) => take(ztgate_jwt::build(section, ctx, path), problems)
                .map(|f| (Box::new(f) as Box<dyn Filter>, section.mode)),
        },
        FilterKind::Device => match &raw.device {
            None => {
                problems.push(ConfigProblem::new(
                    at,
                    "`device` needs a `device:` section (at least `secret`)",
                ));
                None
            }
            Some(section) => take(ztgate_device::build(section, ctx, path), problems)
                .map(|f| (Box::new(f) as Box<dyn Filter>, section.mode)),
        },
        FilterKind::Route => take(ztgate_route::build(&raw.routes, ctx, path), problems)
            .map(|f| (Box::new(f) as Box<dyn Filter>, Mode::Enforce)),
        FilterKind::Ratelimit => {
            let section = raw.ratelimit.clone().unwrap_or_default();
            let names: Vec<&str> = raw.routes.iter().map(|r| r.name.as_str()).collect();
            problems.extend(ztgate_ratelimit::check_route_names(&section, path, &names));
            take(ztgate_ratelimit::build(&section, ctx, path), problems)
                .map(|f| (Box::new(f) as Box<dyn Filter>, section.mode))
        }
        FilterKind::Policy => match &raw.policy {
            None => {
                problems.push(ConfigProblem::new(
                    at,
                    "`policy` needs a `policy:` section (at least `rego`)",
                ));
                None
            }
            Some(section) => {
                let f = Arc::new(take(
                    ztgate_policy::build(section, &route_rules(raw), ctx, path),
                    problems,
                )?);
                *policy = Some(f.clone());
                Some((Box::new(f) as Box<dyn Filter>, section.mode))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_match_v4_mapped_peers() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_any(&nets, ip("10.1.2.3")));
        assert!(in_any(&nets, ip("::ffff:10.1.2.3")));
        assert!(!in_any(&nets, ip("::ffff:11.1.2.3")));
        assert!(!in_any(&nets, ip("11.1.2.3")));
        // A v6 CIDR does not swallow a v4 address by accident.
        let v6: Vec<IpNet> = vec!["::/0".parse().unwrap()];
        assert!(!in_any(&v6, ip("10.1.2.3")));
    }

    #[test]
    fn a_reload_names_the_settings_only_a_restart_applies() {
        let dir = std::env::temp_dir();
        let parse = |extra: &str| {
            let yaml = format!(
                "listener:\n  address: 127.0.0.1:8443\n  tls: {{cert: a.pem, key: b.pem, client_ca: c.pem}}\n{extra}admin:\n  address: 127.0.0.1:9901\npipeline: [route]\nroutes: []\nupstreams: {{}}\n"
            );
            let loaded = crate::config::parse(&dir.join("z.yaml"), &yaml, |_| None).unwrap();
            let raw = &loaded.raw;
            (
                raw.listener.request_header_timeout,
                raw.listener.max_connections,
            )
        };
        // The raw keys exist and parse; the comparison itself:
        let (t, m) = parse("  request_header_timeout: 3s\n  max_connections: 5\n");
        assert_eq!(t, Duration::from_secs(3));
        assert_eq!(m.map(|n| n.get()), Some(5));
        let base = Static {
            listen: "127.0.0.1:1".parse().unwrap(),
            admin: "127.0.0.1:2".parse().unwrap(),
            client_auth: ClientAuth::Require,
            min_version: TlsVersion::Tls12,
            h2_idle_timeout: Duration::from_secs(1),
            threads: 1,
            work_stealing: false,
            grace_period: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(1),
            pid_file: String::new(),
            upgrade_sock: String::new(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            audit: None,
            watched: vec![],
            request_header_timeout: Duration::from_secs(10),
            max_connections: None,
            max_connections_per_ip: None,
        };
        assert!(base.restart_only_changes(&base.clone()).is_empty());
        let next = Static {
            threads: 4,
            max_connections_per_ip: std::num::NonZeroUsize::new(2),
            ..base.clone()
        };
        assert_eq!(
            base.restart_only_changes(&next),
            vec!["listener.max_connections_per_ip", "server.threads"]
        );
    }
}
