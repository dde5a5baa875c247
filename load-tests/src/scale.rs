//! Connection scale: how much memory the proxy spends per idle mTLS HTTP/2
//! connection, and how many new connections per second it accepts with full
//! and with resumed TLS handshakes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::conn::{Endpoint, Handshake};
use crate::engine::{probe, Watch};
use crate::procstat;
use crate::token::TokenSource;

/// Longest wait for one connection (TCP, TLS, HTTP/2 and the probe call).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Result of `hold`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HoldResult {
    pub wanted: usize,
    pub held: usize,
    pub failed: usize,
    /// Seconds to open them all.
    pub connect_s: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// (after − before) ÷ held, KiB.
    pub rss_per_conn_kib: f64,
    pub first_error: Option<String>,
}

/// Open `n` connections (each makes one call), hold them idle, measure RSS.
pub async fn hold(
    ep: Endpoint,
    n: usize,
    parallel: usize,
    settle: Duration,
    hold_for: Duration,
    tokens: TokenSource,
    watch: &Watch,
) -> Result<HoldResult, procstat::ProcError> {
    let before = if watch.pids.is_empty() {
        procstat::Sample::default()
    } else {
        procstat::sample(&watch.pids)?
    };
    let ep = Arc::new(ep);
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (ep, sem, tokens) = (ep.clone(), sem.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|e| e.to_string())?;
            // A proxy at its connection limit stops accepting: give up on
            // that connection instead of waiting for ever.
            tokio::time::timeout(CONNECT_TIMEOUT, async {
                let (mut send, _) = ep.connect().await.map_err(|e| e.to_string())?;
                probe(&mut send, &ep, &tokens).await?;
                Ok::<_, String>(send)
            })
            .await
            .map_err(|_| "timed out".to_string())?
        }));
    }
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let after = if watch.pids.is_empty() {
        procstat::Sample::default()
    } else {
        procstat::sample(&watch.pids)?
    };
    tokio::time::sleep(hold_for).await;
    let count = held.len();
    drop(held);
    Ok(HoldResult {
        wanted: n,
        held: count,
        failed,
        connect_s,
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        rss_per_conn_kib: if count == 0 {
            0.0
        } else {
            after.rss_kib.saturating_sub(before.rss_kib) as f64 / count as f64
        },
        first_error,
    })
}

/// Result of `handshakes`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HandshakeResult {
    pub resumption_offered: bool,
    pub duration_s: f64,
    pub connections: u64,
    pub full: u64,
    pub resumed: u64,
    pub errors: u64,
    pub per_second: f64,
    pub proxy_cpu_us_per_conn: Option<f64>,
    pub first_error: Option<String>,
}

/// New connection + one call + close, in a loop, from `parallel` tasks.
pub async fn handshakes(
    ep: Endpoint,
    parallel: usize,
    warmup: Duration,
    duration: Duration,
    resumption_offered: bool,
    tokens: TokenSource,
    watch: &Watch,
) -> Result<HandshakeResult, procstat::ProcError> {
    let ep = Arc::new(ep);
    let measure_start = Instant::now() + warmup;
    let end = measure_start + duration;
    let counters = Arc::new([
        AtomicU64::new(0), // full
        AtomicU64::new(0), // resumed
        AtomicU64::new(0), // errors
    ]);
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for _ in 0..parallel.max(1) {
        let (ep, counters, tokens, first_error) = (
            ep.clone(),
            counters.clone(),
            tokens.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let res = tokio::time::timeout(CONNECT_TIMEOUT, async {
                    let (mut send, kind) = ep.connect().await.map_err(|e| e.to_string())?;
                    probe(&mut send, &ep, &tokens).await?;
                    Ok::<_, String>(kind)
                })
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
                if t < measure_start {
                    continue;
                }
                let slot = match res {
                    Ok(Handshake::Resumed) => 1,
                    Ok(_) => 0,
                    Err(e) => {
                        if let Ok(mut g) = first_error.lock() {
                            g.get_or_insert(e);
                        }
                        2
                    }
                };
                if let Some(c) = counters.get(slot) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut cpu = None;
    if !watch.pids.is_empty() {
        tokio::time::sleep_until(measure_start).await;
        let a = procstat::sample(&watch.pids)?;
        tokio::time::sleep_until(end).await;
        let b = procstat::sample(&watch.pids)?;
        cpu = Some((a, b));
    }
    for t in tasks {
        let _ = t.await;
    }
    let [full, resumed, errors] =
        [0, 1, 2].map(|i| counters.get(i).map_or(0, |c| c.load(Ordering::Relaxed)));
    let connections = full + resumed;
    let secs = duration.as_secs_f64();
    let first_error = first_error.lock().ok().and_then(|g| g.clone());
    Ok(HandshakeResult {
        resumption_offered,
        duration_s: secs,
        connections,
        full,
        resumed,
        errors,
        per_second: if secs > 0.0 {
            connections as f64 / secs
        } else {
            0.0
        },
        proxy_cpu_us_per_conn: cpu.map(|(a, b)| {
            procstat::stats(&watch.pids, a, b, watch.clk_tck, connections, secs).cpu_us_per_call
        }),
        first_error,
    })
}
