//! Results: one JSON document per measured target, a Markdown row for the
//! console, and the assembled `report.md` with ratios to the direct path and
//! to HAProxy.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::Outcome;
use crate::grpc::Method;
use crate::redisstat::SCRIPT_COMMANDS;
use crate::scale::{HandshakeResult, HoldResult};

/// One measured target, as written by `ztgate-loadgen run --out`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    /// Target label (`direct`, `haproxy-jwt`, `ztgate-full`, …).
    pub target: String,
    /// Table the run belongs to (`loaded`, `unloaded`, `selftest`, …).
    pub group: String,
    pub method: Method,
    pub payload: usize,
    pub connections: usize,
    pub streams: usize,
    pub threads: usize,
    /// Open-loop rate, calls/s; `None` for closed loop.
    pub rate: Option<f64>,
    /// `none`, `file`, or `minted-RS256` / `minted-ES256`.
    pub token: String,
    pub tokens_minted: usize,
    /// Calls that reused a pool token (pool smaller than the run).
    pub token_reuses: u64,
    pub warmup_s: f64,
    pub duration_s: f64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl RunResult {
    pub fn error_total(&self) -> u64 {
        self.outcome.errors.values().sum()
    }

    fn errors_cell(&self) -> String {
        if self.outcome.errors.is_empty() {
            return "0".into();
        }
        self.outcome
            .errors
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `a / b`, or `None` when `b` is zero or missing.
pub fn ratio(a: f64, b: Option<f64>) -> Option<f64> {
    match b {
        Some(b) if b > 0.0 && a.is_finite() => Some(a / b),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// The Markdown header matching [`row`].
pub const TABLE_HEADER: &str = "| target | RPS | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | proxy CPU µs/call | proxy cores | proxy RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|";

/// One Markdown row, without ratios (printed after each run).
pub fn row(r: &RunResult) -> String {
    let l = &r.outcome.latency;
    let p = r.outcome.proxy.as_ref();
    format!(
        "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |",
        r.target,
        r.outcome.rps,
        l.p50_us,
        l.p90_us,
        l.p99_us,
        l.p999_us,
        l.max_us,
        r.errors_cell(),
        fmt_opt(p.map(|p| p.cpu_us_per_call), 1),
        fmt_opt(p.map(|p| p.cores), 2),
        fmt_opt(p.map(|p| p.rss_kib as f64 / 1024.0), 1),
    )
}

/// Ratios of one run against the baselines of its group.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Ratios {
    pub rps_vs_direct: Option<f64>,
    pub p99_vs_direct: Option<f64>,
    pub rps_vs_haproxy: Option<f64>,
    pub p99_vs_haproxy: Option<f64>,
    pub cpu_vs_haproxy: Option<f64>,
    pub rss_vs_haproxy: Option<f64>,
}

/// Compare `r` with the direct run and the HAProxy run of its group.
pub fn ratios(r: &RunResult, direct: Option<&RunResult>, haproxy: Option<&RunResult>) -> Ratios {
    let cpu = |x: &RunResult| x.outcome.proxy.as_ref().map(|p| p.cpu_us_per_call);
    let rss = |x: &RunResult| x.outcome.proxy.as_ref().map(|p| p.rss_kib as f64);
    Ratios {
        rps_vs_direct: ratio(r.outcome.rps, direct.map(|d| d.outcome.rps)),
        p99_vs_direct: ratio(
            r.outcome.latency.p99_us,
            direct.map(|d| d.outcome.latency.p99_us),
        ),
        rps_vs_haproxy: ratio(r.outcome.rps, haproxy.map(|h| h.outcome.rps)),
        p99_vs_haproxy: ratio(
            r.outcome.latency.p99_us,
            haproxy.map(|h| h.outcome.latency.p99_us),
        ),
        cpu_vs_haproxy: cpu(r).and_then(|c| ratio(c, haproxy.and_then(cpu))),
        rss_vs_haproxy: rss(r).and_then(|c| ratio(c, haproxy.and_then(rss))),
    }
}

/// Scale results as written by `hold` / `handshake`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScaleResult {
    Hold {
        target: String,
        result: HoldResult,
    },
    Handshake {
        target: String,
        result: HandshakeResult,
    },
}

/// Everything `report` read, plus the computed ratios.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub direct: String,
    pub haproxy: String,
    pub runs: Vec<(RunResult, Ratios)>,
    pub scale: Vec<ScaleResult>,
    /// `state.backend: memory` against `redis`, per table (when both ran).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<StateComparison>,
}

/// Target labels of the state comparison (`run.sh`).
pub const STATE_MEMORY: &str = "ztgate-state-memory";
pub const STATE_REDIS: &str = "ztgate-state-redis";
/// The chain the state targets add rate limiting and DPoP to.
pub const STATE_REFERENCE: &str = "ztgate-full";

/// One target's figures in the state comparison.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StateFigures {
    pub target: String,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    pub cpu_us_per_call: Option<f64>,
    /// Redis requests (commands the gateway sent) per call in the measured
    /// window (redis target only).
    pub redis_requests_per_call: Option<f64>,
    /// Commands Redis executed per call, those inside scripts included.
    pub redis_commands_per_call: Option<f64>,
    /// Redis server read events per call in the window: round trips per
    /// call when one call is in flight (see `redisstat`).
    pub redis_reads_per_call: Option<f64>,
    /// Commands per command name, per call, in the window.
    #[serde(default)]
    pub redis_commands_by_name_per_call: std::collections::BTreeMap<String, f64>,
    /// Requests per call over the warm-up (first connect, script loads).
    pub redis_warmup_requests_per_call: Option<f64>,
    #[serde(default)]
    pub redis_warmup_commands: std::collections::BTreeMap<String, u64>,
    pub redis_server_cpu_us_per_call: Option<f64>,
}

impl StateFigures {
    fn of(r: &RunResult) -> Self {
        let l = &r.outcome.latency;
        let redis = r.outcome.redis.as_ref();
        let w = redis.map(|x| &x.window);
        Self {
            target: r.target.clone(),
            rps: r.outcome.rps,
            p50_us: l.p50_us,
            p99_us: l.p99_us,
            errors: r.error_total(),
            cpu_us_per_call: r.outcome.proxy.as_ref().map(|p| p.cpu_us_per_call),
            redis_requests_per_call: w.map(|w| w.requests_per_call),
            redis_commands_per_call: w.map(|w| w.commands_per_call),
            redis_reads_per_call: w.map(|w| w.reads_per_call),
            redis_commands_by_name_per_call: w
                .map(|w| {
                    w.commands
                        .iter()
                        .map(|(k, &v)| (k.clone(), v as f64 / w.calls.max(1) as f64))
                        .collect()
                })
                .unwrap_or_default(),
            redis_warmup_requests_per_call: redis.map(|x| x.warmup.requests_per_call),
            redis_warmup_commands: redis.map(|x| x.warmup.commands.clone()).unwrap_or_default(),
            redis_server_cpu_us_per_call: w.map(|w| w.server_cpu_us_per_call),
        }
    }
}

/// `state.backend: memory` against `redis` in one table of the report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StateComparison {
    pub group: String,
    /// `ztgate-full` of the same table, for reference.
    pub reference: Option<StateFigures>,
    pub memory: StateFigures,
    pub redis: StateFigures,
    /// Proxy CPU per call, redis ÷ memory.
    pub cpu_redis_vs_memory: Option<f64>,
    /// Proxy CPU per call, redis ÷ `ztgate-full` (rate limit + DPoP + Redis).
    pub cpu_redis_vs_reference: Option<f64>,
    /// Proxy CPU per call, memory ÷ `ztgate-full` (rate limit + DPoP).
    pub cpu_memory_vs_reference: Option<f64>,
    pub rps_redis_vs_memory: Option<f64>,
    pub p99_redis_vs_memory: Option<f64>,
}

/// The state comparison of every table that has both state targets.
pub fn compare_state(runs: &[RunResult]) -> Vec<StateComparison> {
    let mut groups: Vec<&str> = Vec::new();
    for r in runs {
        if !groups.contains(&r.group.as_str()) {
            groups.push(&r.group);
        }
    }
    let find = |g: &str, t: &str| runs.iter().find(|r| r.group == g && r.target == t);
    groups
        .into_iter()
        .filter_map(|g| {
            let memory = StateFigures::of(find(g, STATE_MEMORY)?);
            let redis = StateFigures::of(find(g, STATE_REDIS)?);
            let reference = find(g, STATE_REFERENCE).map(StateFigures::of);
            let cpu_ref = reference.as_ref().and_then(|f| f.cpu_us_per_call);
            Some(StateComparison {
                group: g.to_owned(),
                cpu_redis_vs_memory: redis
                    .cpu_us_per_call
                    .and_then(|c| ratio(c, memory.cpu_us_per_call)),
                cpu_redis_vs_reference: redis.cpu_us_per_call.and_then(|c| ratio(c, cpu_ref)),
                cpu_memory_vs_reference: memory.cpu_us_per_call.and_then(|c| ratio(c, cpu_ref)),
                rps_redis_vs_memory: ratio(redis.rps, Some(memory.rps)),
                p99_redis_vs_memory: ratio(redis.p99_us, Some(memory.p99_us)),
                reference,
                memory,
                redis,
            })
        })
        .collect()
}

fn state_markdown(out: &mut String, cmp: &[StateComparison]) {
    if cmp.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## State backends: memory vs redis
"
    );
    let _ = writeln!(
        out,
        "`{STATE_MEMORY}` and `{STATE_REDIS}` are `{STATE_REFERENCE}` plus a rate-limit rule on every call and DPoP \
         (a fresh proof per call), identical except `state.backend`. Redis figures are read from `INFO` at the \
         edges of the measured window: requests (commands the gateway sent), commands executed (Redis also counts \
         those a Lua script runs, marked \\*), and server read events (with one call in flight, the round trips a \
         call waits for; under load the gateway's multiplexed connection packs several calls' requests into one \
         read). Redis server CPU is not part of the proxy's.\n"
    );
    for c in cmp {
        let _ = writeln!(out, "### {}\n", c.group);
        let _ = writeln!(
            out,
            "| target | RPS | p50 µs | p99 µs | errors | proxy CPU µs/call | CPU ×{STATE_REFERENCE} | CPU ×memory | Redis requests/call | Redis reads/call | Redis commands by name, per call | warm-up requests/call | Redis CPU µs/call |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
        );
        let cpu_ref = c.reference.as_ref().and_then(|f| f.cpu_us_per_call);
        let rows = c
            .reference
            .iter()
            .chain([&c.memory, &c.redis])
            .collect::<Vec<_>>();
        for f in rows {
            let by_name = if f.redis_commands_by_name_per_call.is_empty() {
                "–".to_string()
            } else {
                f.redis_commands_by_name_per_call
                    .iter()
                    .map(|(k, v)| {
                        let inner = if SCRIPT_COMMANDS.contains(&k.as_str()) {
                            "\\*"
                        } else {
                            ""
                        };
                        format!("{k}{inner} {v:.3}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                f.target,
                f.rps,
                f.p50_us,
                f.p99_us,
                f.errors,
                fmt_opt(f.cpu_us_per_call, 1),
                fmt_ratio(f.cpu_us_per_call.and_then(|x| ratio(x, cpu_ref))),
                fmt_ratio(
                    f.cpu_us_per_call
                        .and_then(|x| ratio(x, c.memory.cpu_us_per_call))
                ),
                fmt_opt(f.redis_requests_per_call, 3),
                fmt_opt(f.redis_reads_per_call, 3),
                by_name,
                fmt_opt(f.redis_warmup_requests_per_call, 3),
                fmt_opt(f.redis_server_cpu_us_per_call, 1),
            );
        }
        let _ = writeln!(
            out,
            "\nredis ÷ memory: proxy CPU per call {}, RPS {}, p99 {}; redis ÷ {STATE_REFERENCE}: proxy CPU per call {}.",
            fmt_ratio(c.cpu_redis_vs_memory),
            fmt_ratio(c.rps_redis_vs_memory),
            fmt_ratio(c.p99_redis_vs_memory),
            fmt_ratio(c.cpu_redis_vs_reference),
        );
        if !c.redis.redis_warmup_commands.is_empty() {
            let _ = writeln!(
                out,
                "Warm-up commands (first connect included): {}.",
                c.redis
                    .redis_warmup_commands
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(out);
    }
}

/// Read every `*.json` in `dir` (sorted by name) as `T`, skipping others.
pub fn read_all<T: serde::de::DeserializeOwned>(dir: &Path) -> std::io::Result<Vec<(PathBuf, T)>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        if let Ok(v) = serde_json::from_str(&text) {
            out.push((f, v));
        }
    }
    Ok(out)
}

/// Compute ratios per group.
pub fn summarize(
    runs: Vec<RunResult>,
    scale: Vec<ScaleResult>,
    direct: &str,
    haproxy: &str,
) -> Summary {
    let find = |group: &str, name: &str| {
        runs.iter()
            .find(|r| r.group == group && r.target == name)
            .cloned()
    };
    let with: Vec<(RunResult, Ratios)> = runs
        .iter()
        .map(|r| {
            let d = find(&r.group, direct);
            let h = find(&r.group, haproxy);
            (r.clone(), ratios(r, d.as_ref(), h.as_ref()))
        })
        .collect();
    Summary {
        direct: direct.into(),
        haproxy: haproxy.into(),
        state: compare_state(&runs),
        runs: with,
        scale,
    }
}

/// Render `report.md`.
pub fn markdown(s: &Summary, machine: &str, plot_file: Option<&str>, skipped: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# ztgate load-test report\n");
    if !machine.trim().is_empty() {
        let _ = writeln!(out, "## Machine\n\n{}\n", machine.trim());
    }
    let mut groups: Vec<&str> = Vec::new();
    for (r, _) in &s.runs {
        if !groups.contains(&r.group.as_str()) {
            groups.push(&r.group);
        }
    }
    for g in groups {
        let runs: Vec<&(RunResult, Ratios)> = s.runs.iter().filter(|(r, _)| r.group == g).collect();
        let Some((first, _)) = runs.first() else {
            continue;
        };
        let _ = writeln!(out, "## {g}\n");
        let _ = writeln!(
            out,
            "Workload: `{}`, {} B payload, {} connection(s) × {} stream(s), {}, generator threads {}, warm-up {:.0} s, measured {:.0} s.\n",
            first.method.path(),
            first.payload,
            first.connections,
            first.streams,
            first.rate.map_or_else(|| "closed loop".to_string(), |r| format!("open loop at {r:.0} calls/s")),
            first.threads,
            first.warmup_s,
            first.duration_s,
        );
        let _ = writeln!(
            out,
            "| target | token | RPS | p50 µs | p99 µs | p99.9 µs | max µs | errors | proxy CPU µs/call | proxy RSS MiB | RPS ×direct | RPS ×{h} | CPU ×{h} | p99 ×{h} |",
            h = s.haproxy
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
        );
        for (r, q) in runs {
            let l = &r.outcome.latency;
            let p = r.outcome.proxy.as_ref();
            let token = if r.token_reuses > 0 {
                format!("{} ({} reused)", r.token, r.token_reuses)
            } else {
                r.token.clone()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                r.target,
                token,
                r.outcome.rps,
                l.p50_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                r.errors_cell(),
                fmt_opt(p.map(|p| p.cpu_us_per_call), 1),
                fmt_opt(p.map(|p| p.rss_kib as f64 / 1024.0), 1),
                fmt_ratio(q.rps_vs_direct),
                fmt_ratio(q.rps_vs_haproxy),
                fmt_ratio(q.cpu_vs_haproxy),
                fmt_ratio(q.p99_vs_haproxy),
            );
        }
        let _ = writeln!(out);
    }
    state_markdown(&mut out, &s.state);
    if let Some(p) = plot_file {
        let _ = writeln!(
            out,
            "## Latency by percentile\n\n![latency percentiles]({p})\n"
        );
    }
    let holds: Vec<_> = s
        .scale
        .iter()
        .filter_map(|x| match x {
            ScaleResult::Hold { target, result } => Some((target, result)),
            ScaleResult::Handshake { .. } => None,
        })
        .collect();
    if !holds.is_empty() {
        let _ = writeln!(out, "## Idle connections\n");
        let _ = writeln!(out, "| target | held | failed | open time s | RSS before MiB | RSS after MiB | KiB per connection |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for (t, h) in holds {
            let _ = writeln!(
                out,
                "| {t} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                h.held,
                h.failed,
                h.connect_s,
                h.rss_before_kib as f64 / 1024.0,
                h.rss_after_kib as f64 / 1024.0,
                h.rss_per_conn_kib
            );
        }
        let _ = writeln!(out);
    }
    let hs: Vec<_> = s
        .scale
        .iter()
        .filter_map(|x| match x {
            ScaleResult::Handshake { target, result } => Some((target, result)),
            ScaleResult::Hold { .. } => None,
        })
        .collect();
    if !hs.is_empty() {
        let _ = writeln!(out, "## Handshake rate\n");
        let _ = writeln!(out, "| target | resumption offered | new conn/s | full | resumed | errors | proxy CPU µs/conn |");
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
        for (t, h) in hs {
            let _ = writeln!(
                out,
                "| {t} | {} | {:.0} | {} | {} | {} | {} |",
                if h.resumption_offered { "yes" } else { "no" },
                h.per_second,
                h.full,
                h.resumed,
                h.errors,
                fmt_opt(h.proxy_cpu_us_per_conn, 0)
            );
        }
        let _ = writeln!(out);
    }
    if !skipped.trim().is_empty() {
        let _ = writeln!(out, "## Skipped\n\n{}\n", skipped.trim());
    }
    let _ = writeln!(
        out,
        "## How to read this\n\n\
         - **proxy CPU µs/call** is `utime+stime` of the proxy process(es) over the measured window ÷ successful calls: \
         the figure that holds when the load side saturates first.\n\
         - Latency counts from the send time (closed loop) or from the intended send time (open loop, coordinated omission corrected).\n\
         - Ratios compare with `{}` and `{}` of the same table; ×direct for RPS below 1 means the proxy costs throughput.\n",
        s.direct, s.haproxy
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::Latency;
    use crate::procstat::ProxyStats;

    fn run(target: &str, rps: f64, p99: f64, cpu: Option<f64>) -> RunResult {
        RunResult {
            target: target.into(),
            group: "loaded".into(),
            method: Method::Get,
            payload: 64,
            connections: 4,
            streams: 16,
            threads: 1,
            rate: None,
            token: "none".into(),
            tokens_minted: 0,
            token_reuses: 0,
            warmup_s: 1.0,
            duration_s: 5.0,
            outcome: Outcome {
                calls_ok: (rps * 5.0) as u64,
                rps,
                measured_s: 5.0,
                latency: Latency {
                    p99_us: p99,
                    ..Latency::default()
                },
                proxy: cpu.map(|c| ProxyStats {
                    cpu_us_per_call: c,
                    rss_kib: 2048,
                    ..ProxyStats::default()
                }),
                ..Outcome::default()
            },
        }
    }

    #[test]
    fn ratios_against_direct_and_haproxy() {
        let d = run("direct", 80_000.0, 1000.0, None);
        let h = run("haproxy", 20_000.0, 4000.0, Some(80.0));
        let z = run("ztgate", 40_000.0, 2000.0, Some(20.0));
        let q = ratios(&z, Some(&d), Some(&h));
        assert_eq!(q.rps_vs_direct, Some(0.5));
        assert_eq!(q.rps_vs_haproxy, Some(2.0));
        assert_eq!(q.cpu_vs_haproxy, Some(0.25));
        assert_eq!(q.p99_vs_haproxy, Some(0.5));
        assert_eq!(q.rss_vs_haproxy, Some(1.0));
        // The direct path has no proxy: no CPU ratio, never a division by zero.
        assert_eq!(ratios(&d, Some(&d), Some(&h)).cpu_vs_haproxy, None);
        assert_eq!(ratio(1.0, Some(0.0)), None);
    }

    #[test]
    fn report_has_one_row_per_run_with_ratios() {
        let s = summarize(
            vec![
                run("direct", 80_000.0, 1000.0, None),
                run("haproxy", 20_000.0, 4000.0, Some(80.0)),
                run("nginx", 10_000.0, 8000.0, Some(46.0)),
            ],
            Vec::new(),
            "direct",
            "haproxy",
        );
        let md = markdown(&s, "2 cores", Some("latency.png"), "ztgate-full: no binary");
        assert!(md.contains("| nginx | none | 10000 |"), "{md}");
        assert!(md.contains("0.12×"), "nginx RPS vs direct: {md}");
        assert!(md.contains("0.57×"), "nginx CPU vs haproxy 46/80: {md}");
        assert!(md.contains("![latency percentiles](latency.png)"));
        assert!(md.contains("ztgate-full: no binary"));
    }

    #[test]
    fn state_comparison_has_ratios_and_redis_figures() {
        use crate::redisstat::{RedisStats, RedisWindow};
        let full = run(STATE_REFERENCE, 9000.0, 5000.0, Some(40.0));
        let mem = run(STATE_MEMORY, 8000.0, 6000.0, Some(60.0));
        let mut red = run(STATE_REDIS, 6000.0, 9000.0, Some(75.0));
        red.outcome.redis = Some(RedisStats {
            addr: "127.0.0.1:6390".into(),
            warmup: RedisWindow {
                calls: 10,
                commands: [("script".to_string(), 2u64)].into(),
                commands_per_call: 2.2,
                ..RedisWindow::default()
            },
            window: RedisWindow {
                calls: 1000,
                commands: [
                    ("set".to_string(), 1000u64),
                    ("evalsha".to_string(), 1000),
                    ("incr".to_string(), 1000),
                ]
                .into(),
                commands_per_call: 3.0,
                requests_per_call: 2.0,
                reads_per_call: 1.5,
                server_cpu_us_per_call: 7.0,
            },
        });
        let s = summarize(vec![full, mem, red], Vec::new(), "direct", "haproxy");
        assert_eq!(s.state.len(), 1);
        let c = &s.state[0];
        assert_eq!(c.cpu_redis_vs_memory, Some(1.25));
        assert_eq!(c.cpu_redis_vs_reference, Some(1.875));
        assert_eq!(c.cpu_memory_vs_reference, Some(1.5));
        assert_eq!(c.redis.redis_requests_per_call, Some(2.0));
        assert_eq!(c.redis.redis_commands_per_call, Some(3.0));
        assert_eq!(
            c.redis.redis_commands_by_name_per_call.get("set"),
            Some(&1.0)
        );
        assert_eq!(c.memory.redis_requests_per_call, None);
        let md = markdown(&s, "", None, "");
        assert!(md.contains("## State backends: memory vs redis"), "{md}");
        assert!(md.contains("| ztgate-state-redis | 6000 |"), "{md}");
        assert!(
            md.contains("evalsha 1.000, incr\\* 1.000, set 1.000"),
            "{md}"
        );
        assert!(md.contains("proxy CPU per call 1.25×"), "{md}");
        assert!(md.contains("script 2"), "{md}");
        // Old summaries (no state, no redis fields) still parse.
        let j = serde_json::to_string(&s).unwrap();
        let back: Summary = serde_json::from_str(&j).unwrap();
        assert_eq!(back.state, s.state);
        // Without both state targets there is no section.
        let s = summarize(
            vec![run("direct", 1.0, 1.0, None)],
            Vec::new(),
            "direct",
            "h",
        );
        assert!(s.state.is_empty());
        assert!(!markdown(&s, "", None, "").contains("State backends"));
    }

    #[test]
    fn run_result_json_round_trips() {
        let r = run("direct", 1.0, 2.0, Some(3.0));
        let j = serde_json::to_string(&r).unwrap();
        let back: RunResult = serde_json::from_str(&j).unwrap();
        assert_eq!(back.target, "direct");
        assert_eq!(back.outcome.proxy.unwrap().cpu_us_per_call, 3.0);
        assert!(row(&r).starts_with("| direct | 1 |"));
    }
}
