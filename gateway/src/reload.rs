//! Changes at run time: SIGHUP or a change of the config file or of any
//! file it names (certificates, CA bundles) → load, validate with the same
//! code as `check`, build, swap atomically. On any error the old generation
//! keeps serving and `ztgate_config_reloads_total{result="error"}` counts it.
//!
//! Files are watched by polling their metadata (following symlinks) every
//! [`POLL_INTERVAL`]: it sees Kubernetes' Secret updates, which swap the
//! `..data` symlink rather than write the files, and editors that replace
//! files by rename — both cases where inotify on the file itself goes silent.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{self, Runtime};
use crate::metrics;
use crate::state::Shared;
use crate::tls::material;
use crate::tls::ServerMaterial;

/// How often watched files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

pub struct Reloader {
    pub shared: Arc<Shared>,
    /// The filters' background work for the generation in service.
    background: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What identifies a file version: modification time, size, inode.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(p: &PathBuf) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

impl Reloader {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            background: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Start the background work of the generation about to serve (the
    /// filters' [`ztgate_filter::Filter::background`]: key refresh loops),
    /// replacing the previous generation's. Never waits on the network: a
    /// reload is not refused because an IdP is down. An issuer that kept
    /// its keys (they are memory, not config) goes on verifying; a new
    /// issuer without keys answers `jwks_unavailable` and holds `/readyz`
    /// until its refresh gets them. The same rule at start-up and reload.
    fn start_background(&self, rt: &Runtime) {
        // The span exporter: its thread is started here, in the serving
        // process (after Pingora daemonizes), and kept while `tracing:` is
        // unchanged. A failure leaves tracing as it was (off at start-up).
        if let Err(e) = self.shared.tracing.apply(rt.tracing.as_ref()) {
            tracing::error!(error = %e, "cannot start OpenTelemetry export; tracing unchanged");
        }
        if let Some(store) = &rt.state_store {
            // Dial the shared store now rather than on the first request.
            store.connect_in_background();
        }
        let mut fresh: Vec<_> = rt
            .chain
            .background()
            .into_iter()
            .map(tokio::spawn)
            .collect();
        // The server certificate's OCSP staple (a kept staple is not
        // fetched again before its refresh time).
        if let Some(s) = &rt.material.stapling {
            fresh.push(tokio::spawn(s.clone().run()));
        }
        let old = match self.background.lock() {
            Ok(mut slot) => std::mem::replace(&mut *slot, fresh),
            Err(_) => {
                tracing::error!("background task list poisoned; old tasks keep running");
                return;
            }
        };
        for h in old {
            h.abort();
        }
    }

    /// Reload now; returns whether the new generation is in service.
    pub async fn reload(&self, why: &str) -> bool {
        let path = self.shared.config_path.clone();
        let memory = self.shared.memory.clone();
        // Building opens and verifies files (mmdb, PEM): off the async threads.
        let built =
            tokio::task::spawn_blocking(move || config::load_and_build(&path, &memory)).await;
        let rt = match built {
            Ok(Ok((_, st, rt))) => {
                let restart_only = self.shared.settings.restart_only_changes(&st);
                if !restart_only.is_empty() {
                    tracing::warn!(
                        keys = ?restart_only,
                        "these settings changed but take effect on restart only"
                    );
                }
                rt
            }
            Ok(Err(e)) => return self.failed(why, &e.to_string()),
            Err(e) => return self.failed(why, &e.to_string()),
        };
        self.start_background(&rt);
        record_cert_expiry(&rt);
        self.shared.swap(rt);
        metrics::CONFIG_RELOADS.with_label_values(&["ok"]).inc();
        let waiting = self.shared.runtime.load().chain.not_ready();
        if waiting.is_empty() {
            tracing::info!(trigger = why, "config reloaded");
        } else {
            tracing::warn!(trigger = why, waiting = ?waiting, "config reloaded; not ready yet");
        }
        true
    }

    fn failed(&self, why: &str, problems: &str) -> bool {
        metrics::CONFIG_RELOADS.with_label_values(&["error"]).inc();
        tracing::error!(
            trigger = why,
            problems,
            "config reload failed; keeping the running config"
        );
        false
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Tracing first, before anything can make `/readyz` green: a call
        // served once the gateway is ready is traced.
        let initial = self.shared.runtime.load_full();
        if let Err(e) = self.shared.tracing.apply(initial.tracing.as_ref()) {
            tracing::error!(error = %e, "cannot start OpenTelemetry export; tracing off");
        }
        drop(initial);
        // Services start concurrently: /readyz turns green only once this
        // process holds the gRPC listener (Pingora retries a taken port;
        // another process's listener there must not count, `listening.rs`).
        let listen = self.shared.settings.listen;
        tokio::spawn({
            let shared = self.shared.clone();
            async move {
                let mut logged = false;
                loop {
                    let up = match crate::listening::held(listen) {
                        Ok(held) => held,
                        // No readable /proc: fall back to "it accepts".
                        Err(e) => {
                            if !logged {
                                logged = true;
                                tracing::warn!(error = %e, %listen, "cannot read the socket table; readiness falls back to a test connection");
                            }
                            tokio::net::TcpStream::connect(listen).await.is_ok()
                        }
                    };
                    if up {
                        shared.listening.store(true, Ordering::Release);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; file watching only");
                None
            }
        };
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
        let initial = self.shared.runtime.load_full();
        self.start_background(&initial);
        drop(initial);
        let watched = self.shared.settings.watched.clone();
        let mut stamps: Vec<Stamp> = watched.iter().map(stamp).collect();
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    self.reload("SIGHUP").await;
                    stamps = watched.iter().map(stamp).collect();
                }
                Some(()) = async { match usr1.as_mut() { Some(s) => s.recv().await, None => None } } => {
                    if let Some(a) = &self.shared.audit {
                        a.reopen();
                        tracing::info!("SIGUSR1: audit file reopened");
                    }
                }
                _ = tick.tick() => {
                    let now: Vec<Stamp> = watched.iter().map(stamp).collect();
                    if now != stamps {
                        // Let a writer finish (cert-manager writes cert then key).
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        self.reload("file change").await;
                        stamps = watched.iter().map(stamp).collect();
                    }
                }
            }
        }
    }
}

/// Set `ztgate_certificate_expiry_timestamp_seconds` for every certificate in use.
pub fn record_cert_expiry(rt: &Runtime) {
    let set = set_expiry;
    record_material_expiry(&rt.material);
    for p in rt.pools.values() {
        if let Some(t) = &p.tls {
            set(format!("upstream:{}", p.name), t.client_not_after);
        }
    }
}

/// The expiry gauges of the listener's material: the server certificate,
/// the trust anchors and the CRLs. Also set on each SPIFFE Workload API
/// update, which changes the material without a reload.
pub fn record_material_expiry(m: &ServerMaterial) {
    set_expiry(
        "server".into(),
        m.identity.as_ref().and_then(|i| i.not_after()),
    );
    for (name, c) in m.trust.anchors() {
        set_expiry(name, material::not_after(c));
    }
    for crl in &m.crls.lists {
        if let Some(t) = crl.next_update {
            let secs = t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            metrics::CRL_NEXT_UPDATE
                .with_label_values(&[&crl.issuer_name, &crl.path.display().to_string()])
                .set(i64::try_from(secs).unwrap_or(i64::MAX));
        }
    }
}

/// Set `ztgate_certificate_expiry_timestamp_seconds{name}`.
fn set_expiry(name: String, t: Option<SystemTime>) {
    if let Some(t) = t {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        metrics::CERT_EXPIRY
            .with_label_values(&[&name])
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }
}
