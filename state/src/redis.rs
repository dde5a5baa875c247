//! [`RedisStore`]: the [`StateStore`] of `state: { backend: redis }`.
//!
//! # Each operation is one atomic round trip
//!
//! | operation | command |
//! | --- | --- |
//! | `insert_once` | `SET key 1 NX PX ttl` |
//! | `bind` | script: `SET key v NX PX ttl`, else `GET key` |
//! | `rebind` | `SET key v XX KEEPTTL` |
//! | `hit` | script: `INCR key`; `PEXPIRE` when new (or without expiry); `PTTL` |
//!
//! Scripts run by `EVALSHA` (hash from [`redis::Script`]); on `NOSCRIPT`
//! (a restarted or failed-over server) the same call is sent once as
//! `EVAL`, which also caches the script: two round trips once, instead of
//! the three of `SCRIPT LOAD` + `EVALSHA`, and in a cluster the `EVAL` goes
//! to the key's node like the `EVALSHA` did. The background connect
//! pre-loads both scripts, so even the first call is usually one trip.
//!
//! # Never hanging a request
//!
//! Every operation is bounded by `state.redis.timeout` (→
//! [`StateError::Timeout`]), and a [`Breaker`] refuses operations at once
//! (→ [`StateError::CircuitOpen`]) after consecutive failures, so that while
//! Redis is down calls do not each pay the timeout. When the breaker opens,
//! the connection is thrown away and a new one is dialled in the
//! background: whatever state the old one was stuck in (a half-open TCP
//! connection, a server that now refuses our password, a failed-over
//! primary behind the same DNS name) cannot outlive the cool-down, so the
//! store recovers without a restart.
//!
//! # Runtimes
//!
//! The gateway runs requests on several single-thread tokio runtimes and
//! background work on another. redis-rs spawns a driver task for each
//! connection, and `ConnectionManager` spawns its reconnects, on whatever
//! runtime the call that triggers them runs on; a connection whose driver
//! sits on a runtime that stops (a reload, a shut-down listener) would be
//! dead for every other caller. So the store owns a small runtime (one
//! worker thread, `ztgate-state`, started on first use, shut down when the
//! store is dropped) and every operation runs there: the caller awaits a
//! [`tokio::task::JoinHandle`], which works from any runtime. The benefit
//! is that the timeout, the breaker and the metrics are applied even if the
//! caller gives up (a cancelled request): a half-open probe always reports
//! its result. The cost is measured, and larger than hoped: about 2.5
//! context switches per call on the proxy's core, 80-130 us of proxy CPU
//! per call on the 2-core dev VM (load-tests "State backends": the whole
//! Redis-backed chain is 1.19-1.45x the in-memory one). Driving the
//! connection from the caller's runtime, or handing off batches of
//! requests at once, is the next step.
//!
//! # Connecting
//!
//! [`RedisStore::new`] does no I/O. The first operation creates the
//! connection (`ConnectionManager` for one server, `ClusterConnection` for
//! a cluster) and starts a background connect, bounded by
//! `connect_timeout`, which also pre-loads the scripts. Operations that
//! fail while that first connect is under way are returned as failures but
//! not counted by the breaker, so a slow TLS handshake at start-up does not
//! open it. The password from the config replaces the URL's and is never
//! logged; TCP_NODELAY is set (a multiplexed connection writes small
//! commands that Nagle's algorithm would hold back by up to 40 ms, four
//! times the default timeout).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::io::tcp::TcpSettings;
use ::redis::{
    Client, Cmd, ConnectionAddr, ErrorKind, FromRedisValue, RedisError, RedisFuture, RedisResult,
    Script, ServerErrorKind, Value,
};
use arc_swap::ArcSwapOption;
use tokio::runtime::{Handle, Runtime};
use ztgate_filter::{Bind, Hit, StateAnswer, StateError, StateOp, StateStore, StateUse};

use crate::breaker::{Admission, Breaker, BreakerConfig, Transition};
use crate::build::RedisConfig;
use crate::metrics::{self, Op, OpResult};

/// `bind`: bind `KEYS[1]` to `ARGV[1]` for `ARGV[2]` ms unless a live
/// binding exists, which is returned; nil when the value was bound.
const BIND_LUA: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return nil
end
return redis.call('GET', KEYS[1])
";

/// `hit`: count one hit in the fixed window `ARGV[1]` ms that starts at the
/// key's first hit; returns `{count, ms until the window ends}`. A counter
/// found without expiry (written by something else, or an expiry lost in
/// a failover) is given one now, so that it cannot count forever.
const HIT_LUA: &str = r"
local n = redis.call('INCR', KEYS[1])
local ttl = -1
if n > 1 then
  ttl = redis.call('PTTL', KEYS[1])
end
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
";

static BIND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(BIND_LUA));
static HIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HIT_LUA));

/// Why a [`RedisStore`] cannot be created from valid-looking settings.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redis-rs refused the client settings (e.g. a cluster's seed nodes).
    #[error("invalid Redis settings: {0}")]
    Client(String),
    /// No URL at all.
    #[error("no Redis URL")]
    NoUrl,
}

/// The Redis [`StateStore`]. See the module docs.
pub struct RedisStore {
    inner: Arc<Inner>,
    /// Started on first use; shut down on drop.
    runtime: OnceLock<Runtime>,
    runtime_init: Mutex<()>,
}

/// What the operations, which run on the store's runtime, share.
struct Inner {
    target: Target,
    /// The current connection; `None` until first use (or after a rebuild
    /// failed).
    conn: ArcSwapOption<Conn>,
    conn_init: Mutex<()>,
    breaker: Breaker,
    /// Origin of the breaker's clock.
    epoch: Instant,
    /// While `now` (ns since `epoch`) is before this, the first connect is
    /// under way and failures are not counted by the breaker.
    warming_until: AtomicU64,
    timeout: Duration,
    connect_timeout: Duration,
    key_prefix: String,
    /// The URLs with passwords replaced, for logs and Debug.
    endpoint: String,
    cluster: bool,
    /// Some node is `rediss://` (then rustls needs a crypto provider).
    tls: bool,
}

// One per store, never moved around: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Target {
    Single(Client),
    Cluster(ClusterClient),
}

/// A connection of either kind; both are cheap clones of a shared,
/// multiplexed connection.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisStore {
    /// A store for `config`, with the default breaker. No I/O, no runtime
    /// needed: nothing is dialled until the first operation.
    pub fn new(config: &RedisConfig) -> Result<Self, StoreError> {
        Self::with_breaker(config, BreakerConfig::default())
    }

    /// [`RedisStore::new`] with a tuned breaker (tests).
    pub fn with_breaker(config: &RedisConfig, breaker: BreakerConfig) -> Result<Self, StoreError> {
        let tcp = || TcpSettings::default().set_nodelay(true);
        let target = if config.cluster {
            let nodes = config
                .nodes
                .iter()
                .map(|n| n.clone().set_tcp_settings(tcp()))
                .collect::<Vec<_>>();
            if nodes.is_empty() {
                return Err(StoreError::NoUrl);
            }
            let mut builder = ClusterClient::builder(nodes)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.connect_timeout)
                .tcp_settings(tcp());
            if let Some(p) = &config.password {
                builder = builder.password(p.expose());
            }
            Target::Cluster(
                builder
                    .build()
                    .map_err(|e| StoreError::Client(e.to_string()))?,
            )
        } else {
            let Some(node) = config.nodes.first() else {
                return Err(StoreError::NoUrl);
            };
            let mut info = node.clone().set_tcp_settings(tcp());
            if let Some(p) = &config.password {
                let settings = info.redis_settings().clone().set_password(p.expose());
                info = info.set_redis_settings(settings);
            }
            Target::Single(Client::open(info).map_err(|e| StoreError::Client(e.to_string()))?)
        };
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                conn: ArcSwapOption::empty(),
                conn_init: Mutex::new(()),
                breaker: Breaker::new(BreakerConfig {
                    // A probe is bounded by the timeout; the lease only
                    // matters if its result is lost.
                    probe_lease: breaker.probe_lease.max(config.timeout),
                    ..breaker
                }),
                epoch: Instant::now(),
                warming_until: AtomicU64::new(0),
                timeout: config.timeout,
                connect_timeout: config.connect_timeout,
                key_prefix: config.key_prefix.clone(),
                endpoint: config.endpoints.join(","),
                cluster: config.cluster,
                tls: config
                    .nodes
                    .iter()
                    .any(|n| matches!(n.addr(), ConnectionAddr::TcpTls { .. })),
            }),
            runtime: OnceLock::new(),
            runtime_init: Mutex::new(()),
        })
    }

    /// Whether operations are being refused without I/O right now (for
    /// `/readyz` or `explain`).
    pub fn circuit_open(&self) -> bool {
        self.inner.breaker.is_open(self.inner.now())
    }

    /// Dial now, in the background, instead of on the first operation (so
    /// that the first requests do not wait for TCP, TLS and `AUTH`).
    /// Returns at once; does nothing if a connection exists.
    pub fn connect_in_background(&self) {
        if let Ok(handle) = self.handle() {
            let inner = self.inner.clone();
            handle.spawn(async move {
                if let Err(e) = inner.connection() {
                    tracing::warn!(endpoint = %inner.endpoint, error = %e, "state store: cannot create a Redis connection");
                }
            });
        }
    }

    /// The store's own runtime, started on first use.
    fn handle(&self) -> Result<Handle, StateError> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt.handle().clone());
        }
        let _guard = self.runtime_init.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = self.runtime.get() {
            return Ok(rt.handle().clone());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ztgate-state")
            .enable_all()
            .build()
            .map_err(|e| {
                StateError::Backend(format!("cannot start the state store's runtime: {e}"))
            })?;
        let handle = rt.handle().clone();
        let _ = self.runtime.set(rt);
        Ok(handle)
    }

    /// Run `f` on the store's runtime under the breaker and the timeout,
    /// and record it.
    async fn run<T, F, Fut>(&self, used_by: StateUse, op: Op, f: F) -> Result<T, StateError>
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_labelled(vec![(used_by, op)], f).await
    }

    /// [`RedisStore::run`] for one round trip that serves several
    /// operations (a pipeline): the metrics count each of them.
    async fn run_labelled<T, F, Fut>(
        &self,
        labels: Vec<(StateUse, Op)>,
        f: F,
    ) -> Result<T, StateError>
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let handle = match self.handle() {
            Ok(h) => h,
            Err(e) => {
                for (used_by, op) in &labels {
                    metrics::record(*used_by, *op, OpResult::Error, Duration::ZERO);
                }
                return Err(e);
            }
        };
        let inner = self.inner.clone();
        match handle
            .spawn(async move { inner.execute(&labels, f).await })
            .await
        {
            Ok(result) => result,
            // Only when the store is being dropped (its runtime shuts down).
            Err(_) => Err(StateError::Backend("state store stopped".to_owned())),
        }
    }

    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.inner.key_prefix.len() + key.len());
        k.push_str(&self.inner.key_prefix);
        k.push_str(key);
        k
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // `shutdown_background`, not a plain drop: the store may be dropped
        // inside another runtime (a reload), where blocking is not allowed.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("endpoint", &self.inner.endpoint)
            .field("cluster", &self.inner.cluster)
            .field("key_prefix", &self.inner.key_prefix)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The operation itself, on the store's runtime.
    async fn execute<T, F, Fut>(
        self: Arc<Self>,
        labels: &[(StateUse, Op)],
        f: F,
    ) -> Result<T, StateError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let start = Instant::now();
        let started = self.now();
        let admission = self.breaker.admit(started);
        if admission == Admission::Reject {
            for (used_by, op) in labels {
                metrics::record(*used_by, *op, OpResult::CircuitOpen, Duration::ZERO);
            }
            return Err(StateError::CircuitOpen);
        }
        let outcome = match self.connection() {
            Ok(conn) => tokio::time::timeout(self.timeout, f(conn)).await,
            Err(e) => Ok(Err(e)),
        };
        let took = start.elapsed();
        let (result, label) = match outcome {
            Ok(Ok(v)) => (Ok(v), OpResult::Ok),
            Ok(Err(e)) => (Err(StateError::Backend(describe(&e))), OpResult::Error),
            Err(_elapsed) => (Err(StateError::Timeout), OpResult::Timeout),
        };
        match &result {
            Ok(_) => {
                // An answer proves the connection is up: stop treating
                // failures as part of connecting.
                if self.warming_until.load(Ordering::Relaxed) != 0 {
                    self.warming_until.store(0, Ordering::Release);
                }
                if self.breaker.on_success(admission) == Transition::Closed {
                    tracing::info!(endpoint = %self.endpoint, "state store reachable again: circuit closed");
                }
            }
            Err(e) => {
                let now = self.now();
                // Failures while the first connect is under way are not the
                // store's fault yet; a probe's always counts.
                let warming =
                    now.as_nanos() < u128::from(self.warming_until.load(Ordering::Acquire));
                if admission == Admission::Probe || !warming {
                    if let Transition::Opened(cooldown) =
                        self.breaker.on_failure(admission, started, now)
                    {
                        tracing::warn!(
                            endpoint = %self.endpoint,
                            error = %e,
                            cooldown = %humantime::format_duration(cooldown),
                            "state store unavailable: circuit open, reconnecting",
                        );
                        self.rebuild();
                    }
                }
            }
        }
        for (used_by, op) in labels {
            metrics::record(*used_by, *op, label, took);
        }
        result
    }

    /// The current connection, created (and dialled in the background) on
    /// first use. Must run on the store's runtime.
    fn connection(self: &Arc<Self>) -> RedisResult<Conn> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let _guard = self.conn_init.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let c = self.connect()?;
        self.conn.store(Some(Arc::new(c.clone())));
        Ok(c)
    }

    /// Replace the connection by a new one (the breaker just opened).
    fn rebuild(self: &Arc<Self>) {
        let _guard = self.conn_init.lock().unwrap_or_else(|p| p.into_inner());
        match self.connect() {
            Ok(c) => self.conn.store(Some(Arc::new(c))),
            Err(e) => {
                // Try again on the next operation let through.
                self.conn.store(None);
                tracing::warn!(endpoint = %self.endpoint, error = %describe(&e), "state store: cannot create a Redis connection");
            }
        }
    }

    /// A new lazy connection, and a background task that dials it (bounded
    /// by `connect_timeout`) and pre-loads the scripts. Must run on the
    /// store's runtime: redis-rs spawns its tasks on the current one.
    fn connect(self: &Arc<Self>) -> RedisResult<Conn> {
        if self.tls {
            // redis-rs builds its TLS config with rustls' process default
            // provider; install ring (the one compiled in) unless the
            // process already chose one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let conn = match &self.target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    // Operations are bounded by our own timeout; a response
                    // timeout here would make every slow answer a reconnect.
                    .set_response_timeout(None)
                    // One retry, then fail: our breaker and rebuild take
                    // over, instead of a reconnect loop of its own that
                    // nobody awaits.
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Conn::Single(ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    config,
                )?)
            }
            Target::Cluster(client) => Conn::Cluster(
                client.get_pending_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(self.connect_timeout)
                        .set_response_timeout(self.connect_timeout),
                ),
            ),
        };
        let until = self.now().saturating_add(self.connect_timeout);
        self.warming_until.store(
            u64::try_from(until.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        let inner = Arc::clone(self);
        let mut warm = conn.clone();
        tokio::spawn(async move {
            let r = tokio::time::timeout(inner.connect_timeout, warm_up(&mut warm)).await;
            inner.warming_until.store(0, Ordering::Release);
            match r {
                Ok(Ok(())) => tracing::debug!(endpoint = %inner.endpoint, "state store connected"),
                Ok(Err(e)) => {
                    tracing::warn!(endpoint = %inner.endpoint, error = %describe(&e), "state store: cannot connect to Redis")
                }
                Err(_) => {
                    tracing::warn!(endpoint = %inner.endpoint, "state store: connecting to Redis timed out")
                }
            }
        });
        Ok(conn)
    }
}

/// Dial (`PING`) and pre-load the scripts, so that the first operations
/// are one round trip.
async fn warm_up(conn: &mut Conn) -> RedisResult<()> {
    ::redis::cmd("PING").query_async::<Value>(conn).await?;
    for script in [BIND_LUA, HIT_LUA] {
        ::redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script)
            .query_async::<Value>(conn)
            .await?;
    }
    Ok(())
}

/// `EVALSHA`, and `EVAL` once on `NOSCRIPT` (see the module docs).
async fn eval<T: FromRedisValue>(
    conn: &mut Conn,
    script: &Script,
    source: &str,
    key: &str,
    args: &[&[u8]],
) -> RedisResult<T> {
    let with = |cmd: &str, body: &str| {
        let mut c = ::redis::cmd(cmd);
        c.arg(body).arg(1).arg(key);
        for a in args {
            c.arg(*a);
        }
        c
    };
    match with("EVALSHA", script.get_hash()).query_async(conn).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            with("EVAL", source).query_async(conn).await
        }
        other => other,
    }
}

/// A short description of a redis-rs error for [`StateError::Backend`]
/// and logs (it never contains the password: redis-rs does not repeat it,
/// and server errors such as `WRONGPASS` do not either).
fn describe(e: &RedisError) -> String {
    e.to_string()
}

/// Milliseconds for `PX`/`PEXPIRE`: at least 1 (`PX 0` is an error, and a
/// zero TTL would be a key that never expires for `PEXPIRE`… or an error).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait::async_trait]
impl StateStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn insert_once(
        &self,
        used_by: StateUse,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let key = self.key(key);
        let ttl = millis(ttl);
        self.run(used_by, Op::InsertOnce, move |mut conn| async move {
            let reply: Value = ::redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .query_async(&mut conn)
                .await?;
            Ok(!matches!(reply, Value::Nil))
        })
        .await
    }

    async fn bind(
        &self,
        used_by: StateUse,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Bind, StateError> {
        let key = self.key(key);
        let value = value.to_owned();
        let ttl = millis(ttl).to_string();
        self.run(used_by, Op::Bind, move |mut conn| async move {
            let existing: Option<String> = eval(
                &mut conn,
                &BIND_SCRIPT,
                BIND_LUA,
                &key,
                &[value.as_bytes(), ttl.as_bytes()],
            )
            .await?;
            Ok(match existing {
                None => Bind::Bound,
                Some(v) => Bind::Existing(v),
            })
        })
        .await
    }

    async fn rebind(&self, used_by: StateUse, key: &str, value: &str) -> Result<(), StateError> {
        let key = self.key(key);
        let value = value.to_owned();
        self.run(used_by, Op::Rebind, move |mut conn| async move {
            ::redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("XX")
                .arg("KEEPTTL")
                .query_async::<Value>(&mut conn)
                .await?;
            Ok(())
        })
        .await
    }

    async fn hit(&self, used_by: StateUse, key: &str, window: Duration) -> Result<Hit, StateError> {
        let key = self.key(key);
        let window = millis(window).to_string();
        self.run(used_by, Op::Hit, move |mut conn| async move {
            let (count, pttl): (i64, i64) =
                eval(&mut conn, &HIT_SCRIPT, HIT_LUA, &key, &[window.as_bytes()]).await?;
            Ok(hit_of(count, pttl))
        })
        .await
    }

    /// One pipeline: every `SET NX` and `EVALSHA` of the request in one
    /// round trip (the chain's deferred checks). Per-command errors come
    /// back per command, so a `NOSCRIPT` (the script cache was flushed) is
    /// retried alone with `EVAL` without re-running the `SET`s, which must
    /// never run twice. A cluster spreads keys over nodes: there each
    /// operation goes on its own, concurrently.
    async fn batch(&self, ops: &[(StateUse, StateOp)]) -> Vec<Result<StateAnswer, StateError>> {
        if self.inner.cluster || ops.len() < 2 {
            return self.batch_each(ops).await;
        }
        let labels: Vec<(StateUse, Op)> = ops
            .iter()
            .map(|(u, op)| {
                let op = match op {
                    StateOp::InsertOnce { .. } => Op::InsertOnce,
                    StateOp::Hit { .. } => Op::Hit,
                };
                (*u, op)
            })
            .collect();
        let ops: Vec<StateOp> = ops
            .iter()
            .map(|(_, op)| match op {
                StateOp::InsertOnce { key, ttl } => StateOp::InsertOnce {
                    key: self.key(key),
                    ttl: *ttl,
                },
                StateOp::Hit { key, window } => StateOp::Hit {
                    key: self.key(key),
                    window: *window,
                },
            })
            .collect();
        let n = ops.len();
        let answers = self
            .run_labelled(labels, move |mut conn| async move {
                let mut pipe = ::redis::pipe();
                pipe.ignore_errors();
                for op in &ops {
                    match op {
                        StateOp::InsertOnce { key, ttl } => {
                            pipe.cmd("SET")
                                .arg(key)
                                .arg(1)
                                .arg("NX")
                                .arg("PX")
                                .arg(millis(*ttl));
                        }
                        StateOp::Hit { key, window } => {
                            pipe.cmd("EVALSHA")
                                .arg(HIT_SCRIPT.get_hash())
                                .arg(1)
                                .arg(key)
                                .arg(millis(*window));
                        }
                    }
                }
                let replies: Vec<RedisResult<Value>> = pipe.query_async(&mut conn).await?;
                let mut out = Vec::with_capacity(ops.len());
                for (op, reply) in ops.iter().zip(replies) {
                    out.push(match (op, reply) {
                        (StateOp::InsertOnce { .. }, Ok(v)) => {
                            Ok(StateAnswer::Inserted(!matches!(v, Value::Nil)))
                        }
                        (StateOp::Hit { .. }, Ok(v)) => ::redis::from_redis_value::<(i64, i64)>(v)
                            .map(|(count, pttl)| StateAnswer::Hit(hit_of(count, pttl)))
                            .map_err(|e| StateError::Backend(e.to_string())),
                        (StateOp::Hit { key, window }, Err(e))
                            if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                        {
                            let window = millis(*window).to_string();
                            let (count, pttl): (i64, i64) =
                                eval(&mut conn, &HIT_SCRIPT, HIT_LUA, key, &[window.as_bytes()])
                                    .await?;
                            Ok(StateAnswer::Hit(hit_of(count, pttl)))
                        }
                        (_, Err(e)) => Err(StateError::Backend(describe(&e))),
                    });
                }
                Ok(out)
            })
            .await;
        match answers {
            Ok(v) if v.len() == n => v,
            Ok(_) => (0..n)
                .map(|_| Err(StateError::Backend("short pipeline reply".into())))
                .collect(),
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }
}

impl RedisStore {
    /// Each operation on its own (a cluster, or a single operation).
    async fn batch_each(
        &self,
        ops: &[(StateUse, StateOp)],
    ) -> Vec<Result<StateAnswer, StateError>> {
        let mut out = Vec::with_capacity(ops.len());
        for (used_by, op) in ops {
            out.push(match op {
                StateOp::InsertOnce { key, ttl } => self
                    .insert_once(*used_by, key, *ttl)
                    .await
                    .map(StateAnswer::Inserted),
                StateOp::Hit { key, window } => {
                    self.hit(*used_by, key, *window).await.map(StateAnswer::Hit)
                }
            });
        }
        out
    }
}

/// A window count from the script's `{count, pttl}`.
fn hit_of(count: i64, pttl: i64) -> Hit {
    Hit {
        count: u64::try_from(count).unwrap_or(0),
        resets_in: Duration::from_millis(u64::try_from(pttl).unwrap_or(0)),
    }
}
