//! `ztgate-loadgen`: the gRPC load generator and report builder.
//!
//! Subcommands: `run` (one target, one workload), `self-test` (against an
//! in-process raw backend: the generator's own ceiling), `mint` and `jwks`
//! (tokens and the matching key set), `hold` and `handshake` (connection
//! scale), `report` (assemble `report.md`, `summary.json` and the plot),
//! `count` (exactly N calls, optionally with callgrind's instrumentation
//! switched on for just them) and `callgrind-report` (`callgrind.md`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use http::{HeaderName, HeaderValue};
use ztgate_loadtest::callgrind::{self, Control};
use ztgate_loadtest::conn::{Endpoint, TlsOptions};
use ztgate_loadtest::count::{self, CountResult, Hooks, NoHooks, Plan};
use ztgate_loadtest::dpop::{DpopAuth, DpopKey};
use ztgate_loadtest::engine::{self, Watch, Workload};
use ztgate_loadtest::grpc::Method;
use ztgate_loadtest::plot;
use ztgate_loadtest::report::{self, RunResult, ScaleResult};
use ztgate_loadtest::scale;
use ztgate_loadtest::schedule::Pacing;
use ztgate_loadtest::token::{Alg, Claims, Minter, Pool, TokenSource};

#[derive(Parser)]
#[command(
    name = "ztgate-loadgen",
    version,
    about = "gRPC load generator for ztgate benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure one target with one workload.
    Run(RunArgs),
    /// Measure the generator's own ceiling against an in-process raw h2c backend.
    SelfTest(SelfTestArgs),
    /// Mint tokens (one per line) with an issuer key.
    Mint {
        #[command(flatten)]
        mint: MintArgs,
        /// How many tokens.
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a throw-away PKI: ca.pem, server{,-key}.pem (localhost),
    /// client{,-key}.pem (an X.509-SVID).
    Pki {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "acme.test")]
        trust_domain: String,
        #[arg(long, default_value = "spiffe://acme.test/ns/shop/sa/bench")]
        spiffe_id: String,
    },
    /// Write the JWKS of an issuer key.
    Jwks {
        #[command(flatten)]
        mint: MintArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Hold many idle connections and report the proxy's RSS per connection.
    Hold(HoldArgs),
    /// New connections per second (full or resumed TLS handshakes).
    Handshake(HandshakeArgs),
    /// Assemble report.md, summary.json and latency.png from a results dir.
    Report(ReportArgs),
    /// Exactly --warmup-calls calls, then --rounds rounds of exactly --calls
    /// calls; with --callgrind-pid, callgrind's instrumentation of that
    /// process is on for exactly the rounds' calls and dumped after each.
    Count(CountArgs),
    /// Assemble callgrind.md and callgrind.json from a results dir's
    /// callgrind/*.json (written by `count`).
    CallgrindReport {
        /// Results folder (its callgrind/ holds the count results).
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Where to send the load.
#[derive(Args, Clone)]
struct TargetArgs {
    /// Target address, ip:port.
    #[arg(long)]
    addr: SocketAddr,
    /// Speak TLS, verifying the server with this CA (PEM); h2c without it.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// TLS server name to send and verify.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Do not offer TLS session resumption.
    #[arg(long)]
    no_resumption: bool,
    /// Label in the results.
    #[arg(long, default_value = "target")]
    target: String,
    /// Tokio worker threads of the generator (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

impl TargetArgs {
    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        Ok(match &self.ca {
            None => Endpoint::plain(self.addr),
            Some(ca) => Endpoint::tls(
                self.addr,
                &TlsOptions {
                    ca: ca.clone(),
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                    server_name: self.server_name.clone(),
                    resumption: !self.no_resumption,
                },
            )?,
        })
    }
}

/// Bearer token options.
#[derive(Args, Clone, Default)]
struct TokenArgs {
    /// Send the token in this file (first line) on every call.
    #[arg(long, conflicts_with = "key_file")]
    token_file: Option<PathBuf>,
    /// RFC 9449 DPoP: send the token as `authorization: DPoP …` with a
    /// fresh proof per call (new `jti`, current `iat`) signed with this
    /// P-256 private key (PEM); the token must carry its thumbprint as
    /// `cnf.jkt` (`mint --mint-cnf-key`).
    #[arg(long, requires = "token_file")]
    dpop_key: Option<PathBuf>,
    #[command(flatten)]
    mint: OptMintArgs,
    /// Tokens minted before the run (one per call; the pool wraps around
    /// when the run makes more calls, and the result says how often).
    #[arg(long, default_value_t = 20_000)]
    mint_count: usize,
}

/// Issuer key and claims (required form, for `mint` / `jwks`).
#[derive(Args, Clone)]
struct MintArgs {
    /// Issuer private key, PEM (PKCS#8; PKCS#1 for RSA).
    #[arg(long = "mint-key", id = "key_file")]
    key: PathBuf,
    #[arg(long = "mint-alg", value_enum, default_value = "RS256")]
    alg: Alg,
    #[command(flatten)]
    claims: ClaimArgs,
}

/// Issuer key and claims (optional form, for `run`).
#[derive(Args, Clone, Default)]
struct OptMintArgs {
    /// Mint a fresh token per call with this issuer key (cache-miss workload).
    #[arg(long = "mint-key", id = "key_file")]
    key: Option<PathBuf>,
    #[arg(long = "mint-alg", value_enum, default_value = "RS256")]
    alg: Option<Alg>,
    #[command(flatten)]
    claims: ClaimArgs,
}

#[derive(Args, Clone, Default)]
struct ClaimArgs {
    #[arg(long = "mint-iss", default_value = "https://idp.bench.test")]
    iss: String,
    #[arg(long = "mint-aud", default_value = "orders")]
    aud: String,
    #[arg(long = "mint-sub", default_value = "bench-user")]
    sub: String,
    #[arg(long = "mint-scope", default_value = "orders.read orders.write")]
    scope: String,
    #[arg(long = "mint-kid", default_value = "bench-1")]
    kid: String,
    /// Token lifetime.
    #[arg(long = "mint-lifetime", value_parser = humantime::parse_duration, default_value = "1h")]
    lifetime: Duration,
    /// Bind the tokens to this DPoP key (P-256 private key, PEM): `cnf.jkt`
    /// is its RFC 7638 thumbprint.
    #[arg(long = "mint-cnf-key")]
    cnf_key: Option<PathBuf>,
}

impl ClaimArgs {
    fn claims(&self) -> anyhow::Result<Claims> {
        let cnf_jkt = match &self.cnf_key {
            Some(p) => Some(DpopKey::load(p)?.thumbprint()),
            None => None,
        };
        Ok(Claims {
            kid: self.kid.clone(),
            iss: self.iss.clone(),
            aud: self.aud.clone(),
            sub: self.sub.clone(),
            scope: self.scope.clone(),
            lifetime_s: self.lifetime.as_secs(),
            cnf_jkt,
        })
    }
}

/// The workload.
#[derive(Args, Clone)]
struct LoadArgs {
    #[arg(long, value_enum, default_value = "get")]
    method: Method,
    /// Request payload bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Watch: replies per call.
    #[arg(long, default_value_t = 10)]
    stream_count: u32,
    /// Ask the backend to fail every call with this gRPC code (tests the error accounting).
    #[arg(long, default_value_t = 0)]
    fail_code: u32,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent streams per connection.
    #[arg(long, default_value_t = 16)]
    streams: usize,
    /// Open loop: total calls per second (latency from the intended send time).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Client-side deadline per call.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    call_timeout: Duration,
    /// Extra request header `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Table of the report this run belongs to.
    #[arg(long, default_value = "loaded")]
    group: String,
    /// Write the result JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Proxy processes to sample.
#[derive(Args, Clone, Default)]
struct WatchArgs {
    /// PID whose CPU and RSS are sampled over the measured window (repeatable).
    #[arg(long = "watch-pid")]
    pids: Vec<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// The gateway's Redis (ip:port, no password): read `INFO` before the
    /// warm-up and at the window's edges and report commands, read events
    /// and server CPU per call.
    #[arg(long)]
    redis_stats: Option<SocketAddr>,
}

impl From<&WatchArgs> for Watch {
    fn from(a: &WatchArgs) -> Self {
        Watch {
            pids: a.pids.clone(),
            clk_tck: a.clk_tck,
            redis: a.redis_stats,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    watch: WatchArgs,
}

#[derive(Args)]
struct SelfTestArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Backend runtime threads (on their own OS threads).
    #[arg(long, default_value_t = 1)]
    backend_threads: usize,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Args)]
struct HoldArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    watch: WatchArgs,
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Handshakes in flight while opening.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Wait after the last connection before reading RSS.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    settle: Duration,
    /// Keep them open this long after measuring.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    hold: Duration,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct HandshakeArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    watch: WatchArgs,
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct CountArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    token: TokenArgs,
    #[arg(long, value_enum, default_value = "get")]
    method: Method,
    /// Request payload bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Watch: replies per call.
    #[arg(long, default_value_t = 10)]
    stream_count: u32,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent streams per connection (closed loop).
    #[arg(long, default_value_t = 16)]
    streams: usize,
    /// Calls per measured round.
    #[arg(long)]
    calls: u64,
    /// Calls before the first round (not measured).
    #[arg(long, default_value_t = 1000)]
    warmup_calls: u64,
    /// Measured rounds (each its own dump): how far they agree shows how
    /// deterministic the measure is.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Client-side deadline per call (a proxy under callgrind is ~50× slower).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    call_timeout: Duration,
    /// Extra request header `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// The valgrind'd proxy (started with `--tool=callgrind
    /// --instr-atstart=no`): `callgrind_control -z` and `-i on` before each
    /// round, `-i off` and `-d` after it.
    #[arg(long)]
    callgrind_pid: Option<u32>,
    /// The proxy's `--callgrind-out-file` (no `%p`): each round's dump,
    /// `<file>.<N>`, is read for its total.
    #[arg(long, requires = "callgrind_pid")]
    callgrind_out: Option<PathBuf>,
    #[arg(long, default_value = "callgrind_control")]
    callgrind_control: PathBuf,
    /// Write the result JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    /// Results folder: runs/*.json, scale/*.json, machine.md, skipped.md.
    #[arg(long)]
    dir: PathBuf,
    /// Target label of the direct path.
    #[arg(long, default_value = "direct")]
    direct: String,
    /// Target label ratios "×HAProxy" compare with.
    #[arg(long, default_value = "haproxy-jwt")]
    haproxy: String,
    /// Group whose runs go into the plot.
    #[arg(long, default_value = "loaded")]
    plot_group: String,
    /// TTF font for the plot text (default: DejaVu Sans if installed).
    #[arg(long)]
    font: Option<PathBuf>,
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    Ok(rt)
}

fn headers(raw: &[String]) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    raw.iter()
        .map(|h| {
            let (k, v) = h.split_once(':').context("--header wants `name: value`")?;
            Ok((
                HeaderName::from_bytes(k.trim().as_bytes())?,
                HeaderValue::from_str(v.trim())?,
            ))
        })
        .collect()
}

fn workload(l: &LoadArgs) -> anyhow::Result<Workload> {
    Ok(Workload {
        method: l.method,
        payload: l.payload,
        stream_count: l.stream_count,
        fail_code: l.fail_code,
        connections: l.connections.max(1),
        streams: l.streams.max(1),
        pacing: match l.rate {
            Some(rate) if rate > 0.0 => Pacing::Open { rate },
            Some(_) => bail!("--rate must be positive"),
            None => Pacing::Closed,
        },
        warmup: l.warmup,
        duration: l.duration,
        call_timeout: l.call_timeout,
        headers: headers(&l.headers)?,
    })
}

/// Build the token source; returns it with its description and pool size.
fn tokens(t: &TokenArgs) -> anyhow::Result<(TokenSource, String, usize)> {
    if let Some(f) = &t.token_file {
        if let Some(k) = &t.dpop_key {
            let auth = DpopAuth::new(&TokenSource::read_token(f)?, DpopKey::load(k)?)?;
            return Ok((TokenSource::Dpop(auth.into()), "file+DPoP".into(), 0));
        }
        return Ok((TokenSource::from_file(f)?, "file".into(), 0));
    }
    let Some(key) = &t.mint.key else {
        return Ok((TokenSource::None, "none".into(), 0));
    };
    let alg = t.mint.alg.unwrap_or(Alg::Rs256);
    let minter = Minter::load(key, alg, t.mint.claims.claims()?)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = std::time::Instant::now();
    let pool = Pool::mint(&minter, t.mint_count.max(1), threads)?;
    eprintln!(
        "minted {} {} tokens in {:.1} s",
        pool.len(),
        alg.as_str(),
        started.elapsed().as_secs_f64()
    );
    let n = pool.len();
    Ok((
        TokenSource::Pool(pool.into()),
        format!("minted-{}", alg.as_str()),
        n,
    ))
}

fn write_json<T: serde::Serialize>(out: Option<&Path>, v: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    match out {
        Some(p) => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(p, text).with_context(|| p.display().to_string())?;
        }
        None => println!("{text}"),
    }
    Ok(())
}

fn print_result(r: &RunResult) {
    println!("{}", report::TABLE_HEADER);
    println!("{}", report::row(r));
    if r.outcome.late_sends > 0 {
        println!(
            "open loop: {} calls sent late (target slower than the offered rate)",
            r.outcome.late_sends
        );
    }
}

fn run_cmd(a: RunArgs) -> anyhow::Result<()> {
    let ep = a.target.endpoint()?;
    let w = workload(&a.load)?;
    let (source, token_desc, minted) = tokens(&a.token)?;
    let watch = Watch::from(&a.watch);
    let rt = runtime(a.target.threads)?;
    let outcome = rt.block_on(engine::run(ep, &w, source.clone(), &watch))?;
    let reuses = match &source {
        TokenSource::Pool(p) => p.taken().saturating_sub(p.len()) as u64,
        _ => 0,
    };
    let r = RunResult {
        target: a.target.target.clone(),
        group: a.load.group.clone(),
        method: w.method,
        payload: w.payload,
        connections: w.connections,
        streams: w.streams,
        threads: a.target.threads,
        rate: a.load.rate,
        token: token_desc,
        tokens_minted: minted,
        token_reuses: reuses,
        warmup_s: w.warmup.as_secs_f64(),
        duration_s: w.duration.as_secs_f64(),
        outcome,
    };
    print_result(&r);
    if let Some(out) = &a.load.out {
        write_json(Some(out), &r)?;
    }
    if r.outcome.calls_ok == 0 {
        bail!("no call succeeded (errors: {:?})", r.outcome.errors);
    }
    Ok(())
}

fn count_cmd(a: CountArgs) -> anyhow::Result<()> {
    let ep = a.target.endpoint()?;
    let w = Workload {
        method: a.method,
        payload: a.payload,
        stream_count: a.stream_count,
        fail_code: 0,
        connections: a.connections.max(1),
        streams: a.streams.max(1),
        pacing: Pacing::Closed,
        warmup: Duration::ZERO,
        duration: Duration::ZERO,
        call_timeout: a.call_timeout,
        headers: headers(&a.headers)?,
    };
    let (source, token_desc, _) = tokens(&a.token)?;
    let plan = Plan {
        warmup_calls: a.warmup_calls,
        calls: a.calls,
        rounds: a.rounds.max(1),
    };
    let mut control;
    let mut none = NoHooks;
    let hooks: &mut dyn Hooks = match a.callgrind_pid {
        Some(pid) => {
            control = Control {
                program: a.callgrind_control.clone(),
                pid,
                out: a.callgrind_out.clone(),
                calls: a.calls,
            };
            &mut control
        }
        None => &mut none,
    };
    let rt = runtime(a.target.threads)?;
    let outcome = rt.block_on(count::run(ep, &w, source.clone(), plan, hooks))?;
    let reuses = match &source {
        TokenSource::Pool(p) => p.taken().saturating_sub(p.len()) as u64,
        _ => 0,
    };
    let invalid = outcome.invalid_reason();
    let r = CountResult {
        target: a.target.target.clone(),
        token: token_desc,
        method: w.method.path().to_owned(),
        payload: w.payload,
        connections: w.connections,
        streams: w.streams,
        warmup_calls: a.warmup_calls,
        calls: a.calls,
        callgrind_pid: a.callgrind_pid,
        token_reuses: reuses,
        invalid: invalid.clone(),
        outcome,
    };
    for (i, round) in r.outcome.rounds.iter().enumerate() {
        eprintln!(
            "{} round {}: {} of {} calls ok in {:.1} s{}",
            r.target,
            i + 1,
            round.phase.ok,
            round.phase.calls,
            round.phase.wall_s,
            round
                .measured
                .as_ref()
                .map(|m| format!(", {} Ir, {:.0} Ir/call", m.total_ir, m.ir_per_call))
                .unwrap_or_default()
        );
    }
    write_json(a.out.as_deref(), &r)?;
    if let Some(why) = invalid {
        bail!("{}: the result is invalid: {why}", r.target);
    }
    Ok(())
}

fn callgrind_report(dir: &Path) -> anyhow::Result<()> {
    let mut results: Vec<CountResult> = report::read_all(&dir.join("callgrind"))?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    // A results folder that was moved (or committed) keeps its dumps beside
    // the JSON, possibly gzip'd (run.sh compresses them): read them there.
    for m in results
        .iter_mut()
        .flat_map(|r| r.outcome.rounds.iter_mut())
        .filter_map(|x| x.measured.as_mut())
    {
        if let Some(name) = Path::new(&m.dump).file_name() {
            let here = dir.join("callgrind").join(name);
            let mut gz = here.clone().into_os_string();
            gz.push(".gz");
            if let Some(found) = [here, PathBuf::from(gz)].into_iter().find(|p| p.exists()) {
                m.dump = found.display().to_string();
            }
        }
    }
    if results.is_empty() {
        bail!("no count results under {}", dir.join("callgrind").display());
    }
    let summary = callgrind::report::summarize(&results);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let md = callgrind::report::markdown(&summary, &read("machine.md"), &read("skipped.md"));
    std::fs::write(dir.join("callgrind.md"), md)?;
    write_json(Some(&dir.join("callgrind.json")), &summary)?;
    println!("{}", dir.join("callgrind.md").display());
    Ok(())
}

fn self_test(a: SelfTestArgs) -> anyhow::Result<()> {
    // The backend gets its own runtime on its own threads, as it would in
    // its own process.
    let backend_rt = runtime(a.backend_threads)?;
    let addr = backend_rt.block_on(ztgate_loadtest::backend::spawn_raw(
        "127.0.0.1:0".parse()?,
        "raw",
    ))?;
    let bg = std::thread::spawn(move || {
        backend_rt.block_on(std::future::pending::<()>());
    });
    drop(bg);
    run_cmd(RunArgs {
        target: TargetArgs {
            addr,
            ca: None,
            cert: None,
            key: None,
            server_name: "localhost".into(),
            no_resumption: false,
            target: "self-test".into(),
            threads: a.threads,
        },
        load: a.load,
        token: TokenArgs::default(),
        watch: WatchArgs::default(),
    })
}

fn report_cmd(a: ReportArgs) -> anyhow::Result<()> {
    let runs: Vec<RunResult> = report::read_all(&a.dir.join("runs"))?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let scale: Vec<ScaleResult> = report::read_all(&a.dir.join("scale"))?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    if runs.is_empty() && scale.is_empty() {
        bail!("no results under {}", a.dir.display());
    }
    let summary = report::summarize(runs, scale, &a.direct, &a.haproxy);
    let series: Vec<plot::Series<'_>> = summary
        .runs
        .iter()
        .filter(|(r, _)| r.group == a.plot_group && r.outcome.calls_ok > 0)
        .map(|(r, _)| plot::Series {
            label: &r.target,
            curve: &r.outcome.latency.curve,
        })
        .collect();
    let mut plot_file = None;
    if !series.is_empty() {
        let text = plot::load_font(a.font.as_deref());
        plot::percentiles(
            &a.dir.join("latency.png"),
            &format!("latency by percentile ({})", a.plot_group),
            &series,
            text,
        )?;
        plot_file = Some("latency.png");
    }
    let read = |name: &str| std::fs::read_to_string(a.dir.join(name)).unwrap_or_default();
    let md = report::markdown(
        &summary,
        &read("machine.md"),
        plot_file,
        &read("skipped.md"),
    );
    std::fs::write(a.dir.join("report.md"), md)?;
    write_json(Some(&a.dir.join("summary.json")), &summary)?;
    println!("{}", a.dir.join("report.md").display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(a) => run_cmd(a),
        Cmd::SelfTest(a) => self_test(a),
        Cmd::Mint { mint, count, out } => {
            let m = Minter::load(&mint.key, mint.alg, mint.claims.claims()?)?;
            let mut text = String::new();
            for _ in 0..count {
                text.push_str(&m.mint()?);
                text.push('\n');
            }
            std::fs::write(&out, text).with_context(|| out.display().to_string())?;
            Ok(())
        }
        Cmd::Pki {
            dir,
            trust_domain,
            spiffe_id,
        } => {
            std::fs::create_dir_all(&dir)?;
            let ca = ztgate_testkit::pki::Ca::new(&trust_domain)?;
            ca.write(&dir, "ca")?;
            ca.server()?.write(&dir, "server")?;
            ca.svid(&spiffe_id)?.write(&dir, "client")?;
            Ok(())
        }
        Cmd::Jwks { mint, out } => {
            let m = Minter::load(&mint.key, mint.alg, mint.claims.claims()?)?;
            write_json(Some(&out), &m.jwks())
        }
        Cmd::Hold(a) => {
            let ep = a.target.endpoint()?;
            let (source, _, _) = tokens(&a.token)?;
            let watch = Watch::from(&a.watch);
            let rt = runtime(a.target.threads)?;
            let result = rt.block_on(scale::hold(
                ep,
                a.connections,
                a.parallel,
                a.settle,
                a.hold,
                source,
                &watch,
            ))?;
            eprintln!(
                "{}: held {} of {} ({} failed{}), {:.1} KiB RSS per connection",
                a.target.target,
                result.held,
                result.wanted,
                result.failed,
                result
                    .first_error
                    .as_deref()
                    .map(|e| format!(", first: {e}"))
                    .unwrap_or_default(),
                result.rss_per_conn_kib
            );
            write_json(
                a.out.as_deref(),
                &ScaleResult::Hold {
                    target: a.target.target.clone(),
                    result,
                },
            )
        }
        Cmd::Handshake(a) => {
            let ep = a.target.endpoint()?;
            let (source, _, _) = tokens(&a.token)?;
            let watch = Watch::from(&a.watch);
            let rt = runtime(a.target.threads)?;
            let result = rt.block_on(scale::handshakes(
                ep,
                a.parallel,
                a.warmup,
                a.duration,
                !a.target.no_resumption,
                source,
                &watch,
            ))?;
            eprintln!(
                "{}: {:.0} new connections/s ({} full, {} resumed, {} errors{})",
                a.target.target,
                result.per_second,
                result.full,
                result.resumed,
                result.errors,
                result
                    .first_error
                    .as_deref()
                    .map(|e| format!(", first: {e}"))
                    .unwrap_or_default(),
            );
            write_json(
                a.out.as_deref(),
                &ScaleResult::Handshake {
                    target: a.target.target.clone(),
                    result,
                },
            )
        }
        Cmd::Report(a) => report_cmd(a),
        Cmd::Count(a) => count_cmd(a),
        Cmd::CallgrindReport { dir } => callgrind_report(&dir),
    }
}
