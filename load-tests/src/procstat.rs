//! CPU time and memory of the proxy under test, read from `/proc`.
//!
//! CPU is `utime + stime` of `/proc/PID/stat` (fields 14 and 15, all
//! threads of the process, in clock ticks), sampled exactly at the start
//! and the end of the measured window; RSS is `VmRSS` of
//! `/proc/PID/status`. Several PIDs (nginx's master and worker) are summed.

use serde::{Deserialize, Serialize};

/// Errors reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading /proc/{pid}: {source}")]
    Read { pid: u32, source: std::io::Error },
    #[error("/proc/{pid}/stat has an unexpected format")]
    Format { pid: u32 },
}

/// One reading of a set of processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
}

/// Parse utime + stime out of the text of `/proc/PID/stat`.
///
/// The command name (field 2) is in parentheses and may contain spaces or
/// parentheses, so fields are counted after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<u64> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut f = rest.split_ascii_whitespace();
    // After ')': field 3 (state) is index 0, so utime (14) is index 11.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Parse `VmRSS` (kB) out of the text of `/proc/PID/status`.
pub fn parse_rss_kib(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read(pid: u32, file: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .map_err(|source| ProcError::Read { pid, source })
}

/// Read every PID in `pids` and sum.
pub fn sample(pids: &[u32]) -> Result<Sample, ProcError> {
    let mut s = Sample::default();
    for &pid in pids {
        s.cpu_ticks += parse_stat(&read(pid, "stat")?).ok_or(ProcError::Format { pid })?;
        s.rss_kib += parse_rss_kib(&read(pid, "status")?).unwrap_or(0);
    }
    Ok(s)
}

/// The proxy's resource use over a measured window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProxyStats {
    pub pids: Vec<u32>,
    /// CPU seconds (user + system) spent in the window.
    pub cpu_s: f64,
    /// CPU microseconds per successful call.
    pub cpu_us_per_call: f64,
    /// Share of one core used, 0..=threads.
    pub cores: f64,
    /// RSS at the end of the window, KiB.
    pub rss_kib: u64,
}

/// Turn two samples into per-call figures.
pub fn stats(
    pids: &[u32],
    before: Sample,
    after: Sample,
    clk_tck: u64,
    calls: u64,
    window_s: f64,
) -> ProxyStats {
    let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks);
    let cpu_s = ticks as f64 / clk_tck.max(1) as f64;
    ProxyStats {
        pids: pids.to_vec(),
        cpu_s,
        cpu_us_per_call: if calls == 0 {
            0.0
        } else {
            cpu_s * 1e6 / calls as f64
        },
        cores: if window_s > 0.0 {
            cpu_s / window_s
        } else {
            0.0
        },
        rss_kib: after.rss_kib,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_paren() {
        let line = "4242 (we ird) (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1500 250 0 0 20 0 1 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(line), Some(1750));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let me = std::process::id();
        let a = sample(&[me]).unwrap();
        assert!(a.rss_kib > 0);
        // Burn some CPU so the tick counter moves (10 ms per tick at 100 Hz).
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let b = sample(&[me]).unwrap();
        assert!(b.cpu_ticks > a.cpu_ticks, "{a:?} -> {b:?}");
    }

    #[test]
    fn per_call_math() {
        let s = stats(
            &[1],
            Sample {
                cpu_ticks: 100,
                rss_kib: 10,
            },
            Sample {
                cpu_ticks: 350,
                rss_kib: 20,
            },
            100,
            125_000,
            5.0,
        );
        assert!((s.cpu_s - 2.5).abs() < 1e-9);
        assert!((s.cpu_us_per_call - 20.0).abs() < 1e-9);
        assert!((s.cores - 0.5).abs() < 1e-9);
        assert_eq!(s.rss_kib, 20);
        assert_eq!(
            stats(&[], Sample::default(), Sample::default(), 100, 0, 0.0).cpu_us_per_call,
            0.0
        );
    }

    #[test]
    fn rss_is_read_in_kib() {
        assert_eq!(parse_rss_kib("Name:\tx\nVmRSS:\t  12345 kB\n"), Some(12345));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    }
}
