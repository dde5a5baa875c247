//! What the gateway asked of Redis during a run: `INFO all` read before the
//! warm-up, at the start and at the end of the measured window (the same
//! edges as the proxy's CPU), over a plain RESP connection of our own.
//!
//! - **requests per call**: what the gateway sent, ÷ successful calls: the
//!   `calls` of every `cmdstat_*` except our own `info` and the commands
//!   the gateway's Lua scripts run ([`SCRIPT_COMMANDS`]: Redis counts a
//!   command a script runs like one a client sends).
//! - **commands per call**: every command executed, scripts' included.
//! - **reads per call**: `total_reads_processed` (socket read events on the
//!   server), ÷ calls, less our own one read per sample. With one call in
//!   flight (the unloaded run) a read is a round trip, so this is the
//!   number of round trips a call waits for; under load the gateway's
//!   multiplexed connection packs commands of concurrent calls into one
//!   write, and reads per call falls below commands per call.
//! - **server CPU per call**: `used_cpu_user + used_cpu_sys` of the Redis
//!   server (not part of the proxy's CPU), ÷ calls.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Commands the gateway's scripts (`state/src/redis.rs`) run inside an
/// `EVALSHA` and never send on their own: the rate-limit script's `INCR`,
/// `PTTL`, `PEXPIRE` and the first-seen script's `GET`. (Its `SET` cannot
/// be told from the DPoP replay check's own `SET`; the state targets do not
/// use first-seen bindings, so every `SET` is a request.)
pub const SCRIPT_COMMANDS: &[&str] = &["incr", "pttl", "pexpire", "get"];

/// Errors while reading `INFO`.
#[derive(Debug, thiserror::Error)]
pub enum RedisStatError {
    #[error("redis {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("redis {addr}: unexpected reply {0:?}", .reply)]
    Reply { addr: SocketAddr, reply: String },
    #[error("redis {addr}: no answer within 2 s")]
    Timeout { addr: SocketAddr },
}

/// One reading of `INFO all`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RedisSample {
    /// `cmdstat_<name>` → `calls`.
    pub commands: BTreeMap<String, u64>,
    pub reads: u64,
    pub cpu_s: f64,
}

/// Parse the text of `INFO` (any sections; missing ones stay zero).
pub fn parse_info(text: &str) -> RedisSample {
    let mut s = RedisSample::default();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            let Some((name, fields)) = rest.split_once(':') else {
                continue;
            };
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|v| v.parse().ok());
            if let Some(calls) = calls {
                s.commands.insert(name.to_ascii_lowercase(), calls);
            }
        } else if let Some(v) = line.strip_prefix("total_reads_processed:") {
            s.reads = v.parse().unwrap_or(0);
        } else if let Some(v) = line
            .strip_prefix("used_cpu_user:")
            .or_else(|| line.strip_prefix("used_cpu_sys:"))
        {
            s.cpu_s += v.parse::<f64>().unwrap_or(0.0);
        }
    }
    s
}

/// Read `INFO all` from the server at `addr` (no AUTH: the benchmark's own
/// loopback Redis).
pub async fn sample(addr: SocketAddr) -> Result<RedisSample, RedisStatError> {
    let io = |source| RedisStatError::Io { addr, source };
    let fut = async {
        let mut s = TcpStream::connect(addr).await.map_err(io)?;
        s.set_nodelay(true).map_err(io)?;
        s.write_all(b"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n")
            .await
            .map_err(io)?;
        // A bulk string: `$<len>\r\n<len bytes>\r\n`.
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut chunk = [0u8; 8192];
        loop {
            let n = s.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
                let Some(len) = head.strip_prefix('$').and_then(|l| l.parse::<usize>().ok()) else {
                    return Err(RedisStatError::Reply {
                        addr,
                        reply: head.chars().take(120).collect(),
                    });
                };
                if buf.len() >= pos + 2 + len {
                    let body = String::from_utf8_lossy(&buf[pos + 2..pos + 2 + len]).into_owned();
                    return Ok(parse_info(&body));
                }
            }
        }
        Err(RedisStatError::Reply {
            addr,
            reply: "connection closed".into(),
        })
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| RedisStatError::Timeout { addr })?
}

/// One stretch of a run (warm-up or measured window).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RedisWindow {
    /// Successful calls the stretch is divided by.
    pub calls: u64,
    /// Commands executed, by name, scripts' included (our own `info` left
    /// out).
    pub commands: BTreeMap<String, u64>,
    pub commands_per_call: f64,
    /// Commands the gateway sent (without those its scripts ran) ÷ calls.
    #[serde(default)]
    pub requests_per_call: f64,
    /// Server read events ÷ calls (our own sampling reads left out).
    pub reads_per_call: f64,
    /// Redis server CPU (user + sys) µs ÷ calls.
    pub server_cpu_us_per_call: f64,
}

/// Redis figures of one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RedisStats {
    pub addr: String,
    /// From before the first call to the start of the measured window:
    /// includes connecting, `SCRIPT LOAD`s and the like.
    pub warmup: RedisWindow,
    /// The measured window (same edges as the proxy CPU).
    pub window: RedisWindow,
}

/// The difference `after - before` over `calls` calls; `own_reads` is how
/// many of the read events were our own sampling.
pub fn window(
    before: &RedisSample,
    after: &RedisSample,
    calls: u64,
    own_reads: u64,
) -> RedisWindow {
    let mut commands = BTreeMap::new();
    for (name, &n) in &after.commands {
        if name == "info" {
            continue;
        }
        let d = n.saturating_sub(before.commands.get(name).copied().unwrap_or(0));
        if d > 0 {
            commands.insert(name.clone(), d);
        }
    }
    let per = |x: f64| if calls == 0 { 0.0 } else { x / calls as f64 };
    let total: u64 = commands.values().sum();
    let requests: u64 = commands
        .iter()
        .filter(|(k, _)| !SCRIPT_COMMANDS.contains(&k.as_str()))
        .map(|(_, v)| v)
        .sum();
    RedisWindow {
        calls,
        commands_per_call: per(total as f64),
        requests_per_call: per(requests as f64),
        reads_per_call: per(after.reads.saturating_sub(before.reads + own_reads) as f64),
        server_cpu_us_per_call: per((after.cpu_s - before.cpu_s).max(0.0) * 1e6),
        commands,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO_A: &str = "# Stats\r\ntotal_reads_processed:100\r\n# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.000000\r\nused_cpu_sys_children:9.0\r\n# Commandstats\r\ncmdstat_set:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=3,usec=1,usec_per_call=0.3\r\n";
    const INFO_B: &str = "# Stats\r\ntotal_reads_processed:1101\r\n# CPU\r\nused_cpu_sys:2.000000\r\nused_cpu_user:2.500000\r\n# Commandstats\r\ncmdstat_set:calls=1010,usec=50\r\ncmdstat_evalsha:calls=1000,usec=9\r\ncmdstat_incr:calls=1000,usec=1\r\ncmdstat_info:calls=4,usec=1\r\n";

    #[test]
    fn info_is_parsed_and_differenced_per_call() {
        let a = parse_info(INFO_A);
        assert_eq!(a.commands.get("set"), Some(&10));
        assert_eq!(a.reads, 100);
        assert!((a.cpu_s - 3.5).abs() < 1e-9, "children are not ours");
        let b = parse_info(INFO_B);
        let w = window(&a, &b, 1000, 1);
        assert_eq!(w.commands.get("set"), Some(&1000));
        assert_eq!(w.commands.get("evalsha"), Some(&1000));
        assert!(!w.commands.contains_key("info"));
        assert!(
            (w.commands_per_call - 3.0).abs() < 1e-9,
            "incr in the script"
        );
        assert!((w.requests_per_call - 2.0).abs() < 1e-9, "set + evalsha");
        assert!((w.reads_per_call - 1.0).abs() < 1e-9);
        assert!((w.server_cpu_us_per_call - 1000.0).abs() < 1e-6);
        assert_eq!(window(&a, &b, 0, 0).commands_per_call, 0.0);
    }

    #[tokio::test]
    async fn sample_speaks_resp() {
        // A fake server answering one INFO with a bulk string.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = [0u8; 64];
            let _ = s.read(&mut req).await.unwrap();
            let reply = format!("${}\r\n{INFO_B}\r\n", INFO_B.len());
            // Two writes: the reader must wait for the whole body.
            let (a, b) = reply.as_bytes().split_at(20);
            s.write_all(a).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(b).await.unwrap();
        });
        let got = sample(addr).await.unwrap();
        assert_eq!(got.commands.get("evalsha"), Some(&1000));
        assert_eq!(got.reads, 1101);
    }
}
