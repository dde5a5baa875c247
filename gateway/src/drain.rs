//! Drain on SIGTERM (PRODUCT.md, "Changes at run time"): `/readyz` answers
//! 503 at once and the admin listener stays up; new connections are closed
//! at accept, while open ones keep being served, new streams included; the
//! process exits as soon as no request is in flight, at the latest when
//! `server.grace_period` ends.
//!
//! Why not Pingora's own SIGTERM handling: it broadcasts shutdown to every
//! service at once — the admin listener stops, so `/readyz` is refused
//! rather than 503 — and then sleeps the whole grace period whatever is in
//! flight (`server/mod.rs`). So [`OnSignal`] takes over Pingora's signal
//! watch: SIGQUIT (graceful upgrade) and SIGINT go to Pingora unchanged;
//! SIGTERM runs [`OnSignal::drain`] here and then asks Pingora for its
//! immediate stop, with nothing left to cut.
//!
//! What is counted: requests in flight (one per HTTP/2 stream or HTTP/1.1
//! request, in [`Counted`]) and connections past TLS (in the listener's
//! `Serve`). Once no request is in flight every connection is sent GOAWAY
//! (a stream that raced it is still served), and the process stops when
//! they have closed, or after [`GOAWAY_WAIT`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{watch, Notify};
use tokio::time::{timeout_at, Instant};

/// How long, once nothing is in flight, clients get to close after GOAWAY:
/// one round trip (h2 confirms the GOAWAY with a PING) on any sane link. A
/// client that never answers is cut then.
pub const GOAWAY_WAIT: Duration = Duration::from_secs(1);

/// What the listener, the admin endpoint and the signal watch share.
#[derive(Debug)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    connections: AtomicUsize,
    /// Woken when a count reaches zero during a drain.
    zero: Notify,
    /// What the HTTP layer sees as "shutting down": true sends GOAWAY on
    /// every HTTP/2 connection and ends HTTP/1.1 keep-alive.
    close: watch::Sender<bool>,
    /// Never marked seen, so every clone of it sees `close` turn true, even
    /// one made afterwards (a connection whose handshake ends late).
    close_rx: watch::Receiver<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        let (close, close_rx) = watch::channel(false);
        Self {
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            zero: Notify::new(),
            close,
            close_rx,
        }
    }
}

impl Drain {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether SIGTERM was received.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Count one request until the guard drops.
    pub fn request(&self) -> Counter<'_> {
        Counter::new(self, &self.in_flight)
    }

    /// Count one connection (past TLS) until the guard drops.
    pub fn connection(&self) -> Counter<'_> {
        Counter::new(self, &self.connections)
    }

    /// The watch to give the HTTP layer in place of Pingora's shutdown one.
    pub fn close_watch(&self) -> ShutdownWatch {
        self.close_rx.clone()
    }

    /// Start draining: `/readyz` 503, new connections refused.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// GOAWAY on every connection (and on any that still completes its
    /// handshake).
    pub fn close_connections(&self) {
        self.close.send_replace(true);
    }

    /// Until no request is in flight (call after [`Self::begin`]).
    pub async fn requests_done(&self) {
        self.until_zero(&self.in_flight).await
    }

    /// Until every connection has closed (call after [`Self::begin`]).
    pub async fn connections_closed(&self) {
        self.until_zero(&self.connections).await
    }

    async fn until_zero(&self, count: &AtomicUsize) {
        loop {
            let zero = self.zero.notified();
            tokio::pin!(zero);
            // Registered before the check, so a drop in between wakes us.
            zero.as_mut().enable();
            if count.load(Ordering::SeqCst) == 0 {
                return;
            }
            zero.await;
        }
    }
}

/// One counted request or connection.
pub struct Counter<'a> {
    drain: &'a Drain,
    count: &'a AtomicUsize,
}

impl<'a> Counter<'a> {
    fn new(drain: &'a Drain, count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self { drain, count }
    }
}

impl Drop for Counter<'_> {
    fn drop(&mut self) {
        // Woken only while draining: `notify_waiters` takes a lock, not
        // worth it per request otherwise. The orders pair with `begin` then
        // `until_zero`: a drop that saw no drain decremented first.
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 && self.drain.is_draining() {
            self.drain.zero.notify_waiters();
        }
    }
}

/// The proxy with each request counted in [`Drain`]; otherwise the proxy
/// itself. One request is one call of `process_new_http`: an HTTP/2 stream,
/// or an HTTP/1.1 request with its wait for it on a kept-alive connection
/// (ended by [`StopIdle`] when the drain starts).
pub struct Counted<A> {
    inner: Arc<A>,
    drain: Arc<Drain>,
}

impl<A> Counted<A> {
    pub fn new(inner: A, drain: Arc<Drain>) -> Self {
        Self {
            inner: Arc::new(inner),
            drain,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for Counted<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let _request = self.drain.request();
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

/// Ends the waits for a next request on idle HTTP/1.1 keep-alive
/// connections, so they do not count as in flight during a drain (requests
/// being served go on; HTTP/2 is unaffected).
#[async_trait]
pub trait StopIdle: Send + Sync {
    async fn stop_idle(&self);
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> StopIdle for Counted<A> {
    async fn stop_idle(&self) {
        // Pingora's proxy aborts its parked `read_request`s on cleanup.
        self.inner.http_cleanup().await
    }
}

/// Pingora's signal watch, replaced; see the module docs.
pub struct OnSignal {
    pub drain: Arc<Drain>,
    pub grace: Duration,
    /// After the drain, how long Pingora may take to stop its runtimes
    /// before the process exits anyway (`server.shutdown_timeout`).
    pub exit_after: Duration,
    /// Run after the drain, with the time left in the grace period: sends
    /// what must not be lost at exit (the last requests' trace spans).
    pub before_exit: Box<dyn Fn(Duration) + Send + Sync>,
    pub idle: Arc<dyn StopIdle>,
}

/// A signal stream, or none if it could not be installed (then that
/// signal never fires here, and keeps its default action).
fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(signal = name, error = %e, "cannot watch signal");
            None
        }
    }
}

async fn next(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Longest [`OnSignal::before_exit`] may take.
const BEFORE_EXIT_MAX: Duration = Duration::from_secs(2);

#[async_trait]
impl ShutdownSignalWatch for OnSignal {
    async fn recv(&self) -> ShutdownSignal {
        let mut term = listen(SignalKind::terminate(), "SIGTERM");
        let mut quit = listen(SignalKind::quit(), "SIGQUIT");
        let mut int = listen(SignalKind::interrupt(), "SIGINT");
        tokio::select! {
            _ = next(&mut quit) => return ShutdownSignal::GracefulUpgrade,
            _ = next(&mut int) => return ShutdownSignal::FastShutdown,
            _ = next(&mut term) => {}
        }
        let grace_end = Instant::now() + self.grace;
        tokio::select! {
            () = self.drain() => {}
            _ = next(&mut int) => tracing::warn!("SIGINT during the drain: stopping now"),
        }
        // Within the grace period (what SIGTERM promises), and never more
        // than a couple of seconds for a slow collector.
        let left = grace_end
            .saturating_duration_since(Instant::now())
            .min(BEFORE_EXIT_MAX);
        // Blocks this thread (Pingora's main loop, which has nothing else
        // to do now) for at most `left`.
        (self.before_exit)(left);
        // Pingora stops each runtime by joining its threads; a thread held
        // in a blocking call (seen on a CPU-starved box: the health
        // checker's runtime kept the process alive seconds past the grace
        // period) would hold the exit past what SIGTERM promises. Bound it.
        let bound = self.exit_after;
        let _ = std::thread::Builder::new()
            .name("ztgate-exit".into())
            .spawn(move || {
                std::thread::sleep(bound);
                tracing::warn!(after = ?bound, "runtimes did not stop in time after the drain: exiting now");
                std::process::exit(0);
            });
        // Nothing is left in flight (or the grace period is over): Pingora's
        // immediate stop, which skips its own grace-period sleep.
        ShutdownSignal::FastShutdown
    }
}

impl OnSignal {
    /// The drain after SIGTERM, until nothing is in flight and connections
    /// have closed, or the grace period ends.
    pub async fn drain(&self) {
        let started = Instant::now();
        let deadline = started + self.grace;
        self.drain.begin();
        tracing::info!(
            grace_period = ?self.grace,
            in_flight = self.drain.in_flight(),
            connections = self.drain.connections(),
            "SIGTERM: draining; /readyz answers 503, new connections are refused"
        );
        self.idle.stop_idle().await;
        if timeout_at(deadline, self.drain.requests_done())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.drain.in_flight(),
                "grace period over: cutting the requests still in flight"
            );
            return;
        }
        self.drain.close_connections();
        let goaway_deadline = deadline.min(Instant::now() + GOAWAY_WAIT);
        let closed = timeout_at(goaway_deadline, self.drain.connections_closed()).await;
        // A stream that came in before the GOAWAY is served, within the
        // grace period.
        if timeout_at(deadline, self.drain.requests_done())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.drain.in_flight(),
                "grace period over: cutting the requests still in flight"
            );
            return;
        }
        tracing::info!(
            after = ?started.elapsed(),
            unclosed_connections = if closed.is_ok() { 0 } else { self.drain.connections() },
            "drain complete; stopping now (Pingora logs its immediate stop as \"SIGINT received\")"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn until_zero_wakes_on_the_last_drop() {
        let d = Drain::new();
        let a = d.request();
        let b = d.request();
        d.begin();
        let waiter = {
            let d = d.clone();
            tokio::spawn(async move { d.requests_done().await })
        };
        tokio::task::yield_now().await;
        drop(a);
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        // Idle: returns at once.
        d.connections_closed().await;
    }

    #[test]
    fn close_watch_fires_for_late_subscribers_too() {
        let d = Drain::new();
        let early = d.close_watch();
        d.close_connections();
        let late = d.close_watch();
        assert!(early.has_changed().unwrap());
        assert!(late.has_changed().unwrap());
        assert!(*late.borrow());
    }
}
