//! The stream from the agent, kept open: the last good material, its
//! updates, and the reconnection loop.
//!
//! A [`WorkloadSource`] belongs to the agent socket it reads (claimed from
//! `ztgate_filter::Memory`), not to a config generation: a reload that
//! keeps `spiffe:` keeps the stream and the material it delivered. Its task
//! ends when the last generation using it is gone.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use super::context::{self, X509Context};
use super::wire::{self, Method, WireError};
use crate::metrics;

/// The first wait before reconnecting.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest wait: an agent restart takes seconds, so once it is back
/// new material is at most this late, while a down agent's socket sees
/// one attempt per 5 s per gateway.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One agent socket's material and stream.
pub struct WorkloadSource {
    socket: PathBuf,
    method: Method,
    /// The SPIFFE ID of the SVID to use (`spiffe.svid`); else the first.
    select: Option<String>,
    latest: ArcSwapOption<X509Context>,
    /// Counts accepted updates; the applier waits on it.
    updates: watch::Sender<u64>,
    started: AtomicBool,
    /// Dropped with the source: ends its task.
    alive: watch::Sender<()>,
}

impl WorkloadSource {
    /// A source that has not connected yet (see [`Self::start`]): `check`
    /// and `explain` build one without ever dialling the agent.
    pub fn new(socket: PathBuf, method: Method, select: Option<String>) -> Self {
        Self {
            socket,
            method,
            select,
            latest: ArcSwapOption::empty(),
            updates: watch::channel(0).0,
            started: AtomicBool::new(false),
            alive: watch::channel(()).0,
        }
    }

    /// The last good material, if the agent ever delivered one.
    pub fn latest(&self) -> Option<Arc<X509Context>> {
        self.latest.load_full()
    }

    /// Wakes on each accepted update.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    /// Start following the agent, once (later calls do nothing). Needs a
    /// tokio runtime.
    pub fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(follow(Arc::downgrade(self), self.alive.subscribe()));
        }
    }

    fn accept(&self, ctx: X509Context) {
        let svid = ctx.svid.as_ref().map(|(id, _)| id.clone());
        let domains: Vec<String> = ctx.bundles.keys().cloned().collect();
        self.latest.store(Some(Arc::new(ctx)));
        self.updates.send_modify(|n| *n = n.wrapping_add(1));
        metrics::WORKLOAD_API_UPDATES
            .with_label_values(&[self.method.kind()])
            .inc();
        tracing::info!(
            socket = %self.socket.display(),
            svid = svid.as_deref().unwrap_or("-"),
            trust_domains = ?domains,
            "SPIFFE Workload API update accepted"
        );
    }
}

/// Capped exponential backoff with jitter (so that the replicas on a node
/// do not reconnect to a restarted agent in step).
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn wait(&mut self) -> Duration {
        use rand::Rng;
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        // 80–100% of the step.
        base.mul_f64(rand::thread_rng().gen_range(0.8..=1.0))
    }
}

/// The source's task: stream, take updates, reconnect, until the source
/// is dropped.
async fn follow(source: Weak<WorkloadSource>, mut alive: watch::Receiver<()>) {
    let mut backoff = Backoff::new();
    let mut failing = false;
    loop {
        let Some((socket, method, select)) = source
            .upgrade()
            .map(|s| (s.socket.clone(), s.method, s.select.clone()))
        else {
            return;
        };
        let session = async {
            let mut stream = wire::open(&socket, method).await?;
            metrics::WORKLOAD_API_CONNECTED.set(1);
            tracing::info!(socket = %socket.display(), "connected to the SPIFFE Workload API");
            loop {
                let msg = stream.next().await?;
                // A stream that delivers is a recovery; one that is
                // accepted and then ended at once keeps backing off.
                failing = false;
                backoff.reset();
                let Some(src) = source.upgrade() else {
                    return Ok(());
                };
                match context::decode(method, &msg, select.as_deref()) {
                    Ok(ctx) => src.accept(ctx),
                    Err(e) => {
                        metrics::WORKLOAD_API_ERRORS
                            .with_label_values(&["malformed"])
                            .inc();
                        tracing::error!(
                            socket = %socket.display(),
                            error = %e,
                            "SPIFFE Workload API update refused; the last good material keeps serving"
                        );
                    }
                }
            }
        };
        let ended: Result<(), WireError> = tokio::select! {
            r = session => r,
            _ = alive.changed() => return,
        };
        metrics::WORKLOAD_API_CONNECTED.set(0);
        let Err(e) = ended else {
            return;
        };
        metrics::WORKLOAD_API_ERRORS
            .with_label_values(&[e.label()])
            .inc();
        let wait = backoff.wait();
        // The first failure of a run is a warning; the retries while the
        // agent stays away are not repeated at that level.
        if failing {
            tracing::debug!(socket = %socket.display(), error = %e, retry_in = ?wait, "SPIFFE Workload API still unreachable");
        } else {
            tracing::warn!(socket = %socket.display(), error = %e, retry_in = ?wait, "SPIFFE Workload API unreachable; the last good material keeps serving");
        }
        failing = true;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = alive.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..8).map(|_| b.wait()).collect();
        assert!(waits[0] <= BACKOFF_MIN && waits[0] >= BACKOFF_MIN.mul_f64(0.8));
        assert!(waits[1] > BACKOFF_MIN);
        assert!(waits.iter().all(|w| *w <= BACKOFF_MAX));
        assert!(waits[7] >= BACKOFF_MAX.mul_f64(0.8));
        b.reset();
        assert!(b.wait() <= BACKOFF_MIN);
    }
}
