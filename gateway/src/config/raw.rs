//! The config file exactly as written: serde types mirroring the YAML.
//!
//! Every struct refuses unknown keys. Sections that belong to a filter are
//! defined by that filter's crate (`ztgate_mtls::config::Mtls`, …); this file
//! holds the gateway's own sections. Nothing here is validated beyond its
//! shape: `build.rs` turns it into the runtime config and reports problems.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listener: Listener,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub audit: Option<Audit>,
    #[serde(default)]
    pub assertion: Option<Assertion>,
    /// Filter names in the order they run.
    pub pipeline: Vec<String>,
    #[serde(default)]
    pub sanitize: Option<ztgate_sanitize::config::Sanitize>,
    #[serde(default)]
    pub mtls: Option<ztgate_mtls::config::Mtls>,
    #[serde(default)]
    pub jwt: Option<ztgate_jwt::config::JwtSection>,
    #[serde(default)]
    pub device: Option<ztgate_device::config::Device>,
    #[serde(default)]
    pub routes: Vec<ztgate_route::config::Route>,
    #[serde(default)]
    pub ratelimit: Option<ztgate_ratelimit::config::RateLimit>,
    #[serde(default)]
    pub policy: Option<ztgate_policy::config::Policy>,
    /// Where security memory shared by replicas lives (`memory` when absent).
    #[serde(default)]
    pub state: Option<ztgate_state::StateSection>,
    /// The SPIFFE Workload API as a source of the listener's identity and
    /// of client trust (see `crate::spiffe`).
    #[serde(default)]
    pub spiffe: Option<Spiffe>,
    /// OpenTelemetry spans over OTLP (off when absent; see `crate::trace`).
    #[serde(default)]
    pub tracing: Option<crate::trace::TracingSection>,
    pub upstreams: BTreeMap<String, Upstream>,
}

/// `listener:` — the client-facing TLS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: String,
    pub tls: ListenerTls,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Connections from `trusted_proxies` must start with a PROXY protocol
    /// v1/v2 header, whose address becomes the client's; others are not
    /// read for one (see `proxy_protocol.rs`).
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default = "default_h2_idle", with = "humantime_serde")]
    pub h2_idle_timeout: Duration,
    /// How long a connection has, from the end of its TLS handshake, to
    /// deliver the headers of its first request (HTTP/2 preface included);
    /// then it is closed. Pingora itself waits for the HTTP/2 preface
    /// forever, so without this a client could hold sockets and memory
    /// with handshakes alone. Read at start-up (see `first_request.rs`).
    #[serde(
        default = "default_request_header_timeout",
        deserialize_with = "positive_duration"
    )]
    pub request_header_timeout: Duration,
    /// Most open client connections in all (off when absent): over it, a
    /// new connection is closed right after accept, before TLS. Read at
    /// start-up (see `conn_limits.rs`).
    #[serde(default)]
    pub max_connections: Option<NonZeroUsize>,
    /// Most open client connections from one client IP (the PROXY protocol
    /// address when there is one; off when absent). Read at start-up.
    #[serde(default)]
    pub max_connections_per_ip: Option<NonZeroUsize>,
}

/// Why 10 s: a real client sends its preface and first HEADERS within one
/// round trip of the handshake; 10 s covers slow mobile links many times
/// over and still frees a silent connection's socket and buffers quickly.
fn default_request_header_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A duration that must be more than zero: a zero timeout would close
/// every connection before its first byte.
fn positive_duration<'de, D>(d: D) -> Result<Duration, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let v: Duration = humantime_serde::deserialize(d)?;
    if v.is_zero() {
        return Err(serde::de::Error::custom("must be more than 0s"));
    }
    Ok(v)
}

/// Why 5 minutes: long enough that bursty gRPC clients keep their
/// connection, short enough that abandoned ones do not pile up.
fn default_h2_idle() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Server certificate chain (PEM); left out when `spiffe.workload_api`
    /// supplies the listener's identity (`use_for: [listener]`).
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    /// CA bundle for client certificates; may be left out when
    /// `mtls.trust_bundles` names a bundle per trust domain.
    #[serde(default)]
    pub client_ca: Option<String>,
    /// Certificate revocation lists (PEM or DER) from the CAs of `client_ca`
    /// or `mtls.trust_bundles` (a file name), or from an intermediate CA
    /// (`{ file, issuer }`: the intermediate's certificate, which must chain
    /// to one of them); watched like certificates.
    #[serde(default)]
    pub crl: Vec<CrlEntry>,
    /// OCSP checking of client certificates (off unless configured).
    #[serde(default)]
    pub ocsp: Option<Ocsp>,
    /// Staple an OCSP response for `cert` (fetched from its AIA responder).
    #[serde(default)]
    pub ocsp_stapling: bool,
    #[serde(default)]
    pub client_auth: ClientAuth,
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// `listener.tls.ocsp`: ask the responder named in each client
/// certificate's authority information access whether it is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ocsp {
    #[serde(default)]
    pub mode: OcspMode,
    /// How long a handshake waits for the responder on a cold cache.
    #[serde(default = "default_ocsp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How many certificates' answers are cached (least recently used
    /// go first).
    #[serde(default = "default_ocsp_cache_size")]
    pub cache_size: NonZeroUsize,
    /// An answer is cached until its nextUpdate, but never longer than
    /// this.
    #[serde(default = "default_ocsp_max_cache_age", with = "humantime_serde")]
    pub max_cache_age: Duration,
    /// Clock difference allowed when checking thisUpdate/nextUpdate.
    #[serde(default = "default_ocsp_clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Send a nonce and require the response to echo it when it has one
    /// (off by default: responders that pre-sign answers ignore nonces).
    #[serde(default)]
    pub nonce: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OcspMode {
    #[default]
    Off,
    /// Refuse only a certificate the responder says is revoked.
    Soft,
    /// Refuse unless the responder says good.
    Hard,
}

/// Why 2 s: a cold-cache handshake waits at most this long, and a healthy
/// responder answers in milliseconds.
fn default_ocsp_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_ocsp_cache_size() -> NonZeroUsize {
    NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN)
}

/// Why 1 h: responders usually promise hours to days; an hour bounds how
/// long a revocation can go unseen when they promise more.
fn default_ocsp_max_cache_age() -> Duration {
    Duration::from_secs(3600)
}

fn default_ocsp_clock_skew() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client certificate, no handshake.
    #[default]
    Require,
    /// The handshake accepts a missing certificate (a presented one must
    /// still verify); filters and routes decide.
    Optional,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// `spiffe:` — the SPIFFE Workload API (a SPIRE agent's socket).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spiffe {
    /// `unix:///run/spire/sockets/agent.sock` (write
    /// `${SPIFFE_ENDPOINT_SOCKET}` to take the standard variable).
    pub workload_api: String,
    /// What the Workload API supplies: `listener` (the gateway's SVID is the
    /// listener's certificate and key), `trust` (its X.509 bundles,
    /// federated ones included, are client trust per trust domain),
    /// `upstream` (the SVID is the client certificate of every upstream
    /// with `tls:` and no `cert`/`key` of its own). Default: `listener` and
    /// `trust`.
    #[serde(default = "default_spiffe_use")]
    pub use_for: Vec<SpiffeUse>,
    /// With several SVIDs, the SPIFFE ID of the gateway's; by default the
    /// first the agent sends (its default identity).
    #[serde(default)]
    pub svid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpiffeUse {
    Listener,
    Trust,
    Upstream,
}

fn default_spiffe_use() -> Vec<SpiffeUse> {
    vec![SpiffeUse::Listener, SpiffeUse::Trust]
}

/// `admin:` — health, readiness and metrics on a separate port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "default_admin")]
    pub address: String,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            address: default_admin(),
        }
    }
}

fn default_admin() -> String {
    "127.0.0.1:9901".into()
}

/// `server:` — process settings handed to Pingora.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Off by default: each worker thread runs its own single-threaded
    /// runtime, so a connection and all its streams stay on one thread. With
    /// tokio's work-stealing scheduler the stream task and the h2 connection
    /// task wake each other through the LIFO slot and the connection writes
    /// one frame per syscall; without it, frames of many streams leave in one
    /// write (measured: 46 vs 82 µs of proxy CPU per call). Turn it on when a
    /// few connections carry most traffic and must spread over threads.
    #[serde(default)]
    pub work_stealing: bool,
    /// Pingora defaults to 300 s, which makes every stop take five minutes.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace_period: Duration,
    #[serde(default = "default_shutdown", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    #[serde(default = "default_pid")]
    pub pid_file: String,
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: String,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            threads: default_threads(),
            work_stealing: false,
            grace_period: default_grace(),
            shutdown_timeout: default_shutdown(),
            pid_file: default_pid(),
            upgrade_sock: default_upgrade_sock(),
        }
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown() -> Duration {
    Duration::from_secs(5)
}
fn default_pid() -> String {
    "/tmp/ztgate.pid".into()
}
fn default_upgrade_sock() -> String {
    "/tmp/ztgate_upgrade.sock".into()
}

/// `log:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_level(),
        }
    }
}

fn default_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `audit:` — one JSON line per decision.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// `stdout` or a file path.
    #[serde(default = "default_audit_output")]
    pub output: String,
    /// Lines buffered between the request path and the writer; beyond it
    /// lines are dropped and counted, never waited for.
    #[serde(default = "default_audit_queue")]
    pub queue: usize,
    /// Rotate the file (to `FILE.1`) when it reaches this many bytes.
    #[serde(default)]
    pub max_size: Option<u64>,
}

fn default_audit_output() -> String {
    "stdout".into()
}
fn default_audit_queue() -> usize {
    8192
}

/// `assertion:` — the signed identity assertion sent upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    /// EC P-256 private key (PEM) that signs assertions.
    pub key: String,
    /// Keys still published in the JWKS during a rotation (PEM private keys).
    #[serde(default)]
    pub previous_keys: Vec<String>,
    #[serde(default = "default_assertion_issuer")]
    pub issuer: String,
    #[serde(default = "default_assertion_audience")]
    pub audience: String,
    /// Lifetime of one assertion; they are cached and reused for half of it.
    #[serde(default = "default_assertion_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_assertion_issuer() -> String {
    "ztgate".into()
}
fn default_assertion_audience() -> String {
    "ztgate-upstream".into()
}
fn default_assertion_ttl() -> Duration {
    Duration::from_secs(60)
}

/// One upstream pool (`upstreams.NAME`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub backends: Vec<BackendEntry>,
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    #[serde(default)]
    pub lb: LbPolicy,
    /// The identity `consistent_hash` keys on; required by it, refused otherwise.
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    /// Active gRPC health checks; absent = none (backends count as healthy
    /// unless passively ejected).
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Passive ejection on consecutive connect failures.
    #[serde(default)]
    pub passive: Passive,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whole-call limit; `0s` disables it (long-lived streams).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default = "default_max_streams")]
    pub max_streams_per_connection: usize,
    /// How often backend names are looked up again; `0s` = only at load and
    /// reload. Literal `ip:port` backends are never looked up.
    #[serde(default = "default_dns_refresh", with = "humantime_serde")]
    pub dns_refresh: Duration,
}

/// Envoy's default: quick enough to follow pods of a headless Service
/// coming and going, one `getaddrinfo` per name every few seconds.
fn default_dns_refresh() -> Duration {
    Duration::from_secs(5)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
/// Pingora defaults to 1, i.e. one upstream connection per concurrent RPC.
/// 100 matches the usual h2 server `SETTINGS_MAX_CONCURRENT_STREAMS`.
fn default_max_streams() -> usize {
    100
}

/// A backend: `"ip:port"` or `{address, weight}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum BackendEntry {
    Address(String),
    Weighted(WeightedBackend),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedBackend {
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: usize,
}

fn default_weight() -> usize {
    1
}

impl BackendEntry {
    pub fn address(&self) -> &str {
        match self {
            BackendEntry::Address(a) => a,
            BackendEntry::Weighted(w) => &w.address,
        }
    }
    pub fn weight(&self) -> usize {
        match self {
            BackendEntry::Address(_) => 1,
            BackendEntry::Weighted(w) => w.weight,
        }
    }
}

/// h2 over TLS to the backends. Verification is always on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// CA bundle to verify backends; absent = the system roots.
    #[serde(default)]
    pub ca: Option<String>,
    /// Server name to send and verify.
    pub sni: String,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    /// Fewest in-flight calls (relative to weight).
    LeastConnections,
    /// Rendezvous hash of the `hash_on` identity: a caller sticks to one
    /// backend while it is available.
    ConsistentHash,
}

/// Which verified identity `consistent_hash` keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// The token's `sub`.
    Subject,
    /// The client certificate's SPIFFE ID.
    SpiffeId,
    /// The device fingerprint.
    Fingerprint,
}

/// `upstreams.NAME.health_check`: `grpc.health.v1.Health/Check` probes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "default_hc_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_hc_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Service name asked about; empty = the server as a whole.
    #[serde(default)]
    pub service: String,
    /// Consecutive successes that bring a backend back.
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that take a backend out.
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_hc_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_hc_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_threshold() -> u32 {
    2
}

/// `upstreams.NAME.passive`: skip a backend after consecutive connect failures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passive {
    /// Consecutive connect failures that eject a backend; `0` disables.
    #[serde(default = "default_passive_failures")]
    pub failures: u32,
    /// How long an ejected backend is skipped.
    #[serde(default = "default_passive_ejection", with = "humantime_serde")]
    pub ejection: Duration,
}

impl Default for Passive {
    fn default() -> Self {
        Self {
            failures: default_passive_failures(),
            ejection: default_passive_ejection(),
        }
    }
}

fn default_passive_failures() -> u32 {
    3
}
fn default_passive_ejection() -> Duration {
    Duration::from_secs(10)
}

/// One entry of `listener.tls.crl`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CrlEntry {
    /// A CRL issued by a trust anchor.
    File(String),
    /// A CRL issued by an intermediate CA.
    Issued(IssuedCrl),
}

/// `{ file, issuer }` of `listener.tls.crl`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedCrl {
    pub file: String,
    /// The intermediate CA's certificate (PEM or DER).
    pub issuer: String,
}
