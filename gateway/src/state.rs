//! State shared by the proxy, the admin listener and the reloader.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ztgate_filter::Memory;

use crate::audit::Audit;
use crate::config::{Runtime, Static};
use crate::drain::Drain;
use crate::tls::ServerMaterial;

pub struct Shared {
    /// The current policy generation; each request loads it once.
    pub runtime: ArcSwap<Runtime>,
    /// What handshakes use; swapped together with `runtime` on reload.
    pub material: Arc<ArcSwap<ServerMaterial>>,
    pub settings: Static,
    pub config_path: PathBuf,
    pub audit: Option<Audit>,
    /// What every generation inherits: keys, caches, replay and binding
    /// memory, counters (see [`Memory`]).
    pub memory: Arc<Memory>,
    /// Set once the listeners are up.
    pub listening: AtomicBool,
    /// Requests and connections in flight, and whether SIGTERM started a
    /// drain (then `/readyz` answers 503).
    pub drain: Arc<Drain>,
    /// Notified after each [`Shared::swap`]: the SPIFFE Workload API's
    /// material is then composed again with the new generation's files
    /// (`crate::spiffe::apply`).
    pub swapped: tokio::sync::Notify,
    /// OpenTelemetry spans: the exporter of the `tracing:` settings in
    /// force, which outlives generations that leave the section alone.
    pub tracing: crate::trace::Tracing,
}

impl Shared {
    pub fn new(
        config_path: PathBuf,
        settings: Static,
        rt: Runtime,
        audit: Option<Audit>,
        memory: Arc<Memory>,
    ) -> Arc<Self> {
        let material = Arc::new(ArcSwap::new(rt.material.clone()));
        Arc::new(Self {
            runtime: ArcSwap::from_pointee(rt),
            material,
            settings,
            config_path,
            audit,
            memory,
            listening: AtomicBool::new(false),
            drain: Drain::new(),
            swapped: tokio::sync::Notify::new(),
            tracing: crate::trace::Tracing::default(),
        })
    }

    /// Install a new generation: TLS material first, then the policy.
    pub fn swap(&self, rt: Runtime) {
        self.material.store(rt.material.clone());
        self.runtime.store(Arc::new(rt));
        self.swapped.notify_one();
    }

    /// Why the gateway is not ready, if it is not.
    pub fn not_ready(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.drain.is_draining() {
            why.push("draining".to_owned());
        }
        if !self.listening.load(Ordering::Acquire) {
            why.push(format!(
                "gRPC listener {} not bound by this process yet",
                self.settings.listen
            ));
        }
        let rt = self.runtime.load();
        why.extend(
            rt.workload
                .as_ref()
                .and_then(|w| w.not_ready(&self.material.load())),
        );
        why.extend(rt.chain.not_ready());
        for p in rt.pools.values() {
            if p.healthy_count() == 0 {
                why.push(format!("upstream {} has no healthy backend", p.name));
            }
        }
        why
    }
}
