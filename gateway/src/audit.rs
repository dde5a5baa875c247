//! The audit trail: one JSON line per decision, written off the request path.
//!
//! The request path only formats the line and `try_send`s it into a bounded
//! queue; a dedicated thread writes. When the queue is full the line is
//! dropped and counted in `ztgate_audit_dropped_total`: the audit log never
//! slows or blocks a request. Tokens, keys and secrets are never part of a line.

use std::io::Write;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use ztgate_filter::{Facts, Outcome, Reason};

use crate::metrics;

/// What one decision line is made of (borrowed from the request context).
pub struct Line<'a> {
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub facts: &'a Facts,
    pub path: &'a str,
    pub route: &'a str,
    pub upstream: &'a str,
    /// `deny` or `error` by the reason's fault ([`Outcome::of`]), never
    /// guessed from how far the request got.
    pub decision: Outcome,
    pub reason: &'a str,
    pub grpc_status: &'a str,
    pub shadow: &'a [(&'static str, Reason)],
    pub duration: Duration,
}

#[derive(Serialize)]
struct Json<'a> {
    time: String,
    request_id: &'a str,
    client_ip: Option<String>,
    spiffe_id: Option<&'a str>,
    cert_thumbprint: Option<String>,
    sub: Option<&'a str>,
    iss: Option<&'a str>,
    scopes: &'a [String],
    fingerprint: Option<&'a str>,
    country: Option<&'a str>,
    path: &'a str,
    route: &'a str,
    upstream: &'a str,
    decision: &'a str,
    reason: &'a str,
    status: &'a str,
    shadow_deny: Vec<String>,
    duration_us: u128,
}

impl Line<'_> {
    pub fn to_json(&self) -> String {
        let f = self.facts;
        let j = Json {
            time: rfc3339(SystemTime::now()),
            request_id: self.request_id,
            client_ip: self.client_ip.map(|i| i.to_string()),
            spiffe_id: f.spiffe_id(),
            cert_thumbprint: f.identity().map(|i| hex::encode(i.thumbprint())),
            sub: f.subject(),
            iss: f.token().map(|t| t.issuer().as_ref()),
            scopes: f.scopes(),
            fingerprint: f.fingerprint(),
            country: f.device().and_then(|d| d.country()),
            path: self.path,
            route: self.route,
            upstream: self.upstream,
            decision: self.decision.as_str(),
            reason: self.reason,
            status: self.grpc_status,
            shadow_deny: self
                .shadow
                .iter()
                .map(|(f, r)| format!("{f}:{}", r.as_str()))
                .collect(),
            duration_us: self.duration.as_micros(),
        };
        serde_json::to_string(&j).unwrap_or_default()
    }
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Where lines go: stdout, or a file that can be reopened (log rotation)
/// and rotated by size.
enum Sink {
    Stdout(std::io::Stdout),
    File {
        path: std::path::PathBuf,
        file: std::io::BufWriter<std::fs::File>,
        written: u64,
        max_size: Option<u64>,
    },
}

impl Sink {
    fn open(output: &str, max_size: Option<u64>) -> std::io::Result<Self> {
        if output == "stdout" {
            return Ok(Sink::Stdout(std::io::stdout()));
        }
        let path = std::path::PathBuf::from(output);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Sink::File {
            path,
            file: std::io::BufWriter::new(file),
            written,
            max_size,
        })
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Sink::Stdout(s) => writeln!(s, "{line}"),
            Sink::File { file, written, .. } => {
                writeln!(file, "{line}")?;
                *written += line.len() as u64 + 1;
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(s) => s.flush(),
            Sink::File { file, .. } => file.flush(),
        }
    }

    /// Reopen the file (after an external rotation moved it away), or rotate
    /// it ourselves when it grew past `max_size` (keeping one `.1` file).
    fn maybe_reopen(&mut self, forced: bool) -> std::io::Result<()> {
        let Sink::File {
            path,
            file,
            written,
            max_size,
        } = self
        else {
            return Ok(());
        };
        let full = max_size.is_some_and(|m| *written >= m);
        if !forced && !full {
            return Ok(());
        }
        file.flush()?;
        if full {
            let mut rotated = path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&*path, rotated)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*path)?;
        *written = f.metadata().map(|m| m.len()).unwrap_or(0);
        *file = std::io::BufWriter::new(f);
        Ok(())
    }
}

/// The audit sink.
pub struct Audit {
    tx: SyncSender<String>,
    reopen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Audit {
    /// Start the writer thread. `output` is `stdout` or a file path (appended).
    pub fn start(output: &str, queue: usize, max_size: Option<u64>) -> std::io::Result<Self> {
        use std::sync::atomic::Ordering;
        let mut sink = Sink::open(output, max_size)?;
        let (tx, rx) = sync_channel::<String>(queue.max(1));
        let reopen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("ztgate-audit".into())
            .spawn(move || loop {
                let first = match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(line) => Some(line),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                };
                let mut ok = true;
                if let Some(line) = first {
                    ok &= sink.write_line(&line).is_ok();
                    // Drain what queued up meanwhile, then flush once.
                    while let Ok(line) = rx.try_recv() {
                        ok &= sink.write_line(&line).is_ok();
                    }
                    ok &= sink.flush().is_ok();
                }
                ok &= sink
                    .maybe_reopen(flag.swap(false, Ordering::AcqRel))
                    .is_ok();
                if !ok {
                    tracing::warn!("audit sink write failed");
                }
            })?;
        Ok(Self { tx, reopen })
    }

    /// Ask the writer to reopen its file (SIGUSR1, after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Queue a line; never blocks.
    pub fn record(&self, line: Line<'_>) {
        match self.tx.try_send(line.to_json()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::AUDIT_DROPPED.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_999_999_123);
        assert_eq!(rfc3339(t), "2026-11-30T00:53:19.123Z");
    }

    /// Issue 11: a backend outage is recorded as an error, from the
    /// reason's fault, not as a denial.
    #[test]
    fn decision_is_the_reason_s_outcome() {
        let facts = Facts::default();
        let line = |reason: Reason| {
            let l = Line {
                request_id: "r1",
                client_ip: None,
                facts: &facts,
                path: "/orders.v1.Orders/Get",
                route: "orders",
                upstream: "orders",
                decision: Outcome::of(Some(reason), false),
                reason: reason.as_str(),
                grpc_status: reason.grpc_code().as_str(),
                shadow: &[],
                duration: Duration::from_micros(5),
            };
            serde_json::from_str::<serde_json::Value>(&l.to_json()).unwrap()
        };
        let v = line(Reason::NoHealthyBackend);
        assert_eq!(v["decision"], "error");
        assert_eq!(v["reason"], "no_healthy_backend");
        assert_eq!(v["status"], "14");
        assert_eq!(line(Reason::ScopeMissing)["decision"], "deny");
    }
}
