//! Putting the Workload API's material in force.
//!
//! One background service for the process. It follows the generation in
//! service: starts its source, and whenever the source accepts an update or
//! a reload swaps in another generation, composes the generation's file
//! material with the source's last good update and stores it in the
//! `ArcSwap` the handshakes read (`Shared::material`, the one a reload
//! stores to). Either event leads to a composition from the latest of both,
//! so the material in force always converges on "this generation's files,
//! the last update", whatever order they come in.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::Binding;
use crate::metrics;
use crate::state::Shared;

pub struct Applier {
    shared: Arc<Shared>,
}

impl Applier {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Compose and store; on failure the material in force stays.
    async fn apply(&self, binding: Arc<Binding>) {
        // Composition reads the CRL files: off the async threads.
        let composed = tokio::task::spawn_blocking(move || binding.compose()).await;
        match composed {
            Ok(Ok(m)) => {
                let m = Arc::new(m);
                crate::reload::record_material_expiry(&m);
                self.shared.material.store(m);
            }
            Ok(Err(errs)) => {
                metrics::WORKLOAD_API_ERRORS
                    .with_label_values(&["material"])
                    .inc();
                let problems: Vec<String> = errs
                    .iter()
                    .map(|(part, e)| format!("{}: {e}", part.key_path()))
                    .collect();
                tracing::error!(
                    ?problems,
                    "the SPIFFE Workload API's material does not combine with the files; the material in force stays"
                );
            }
            Err(e) => tracing::error!(error = %e, "composing TLS material failed"),
        }
    }
}

#[async_trait]
impl BackgroundService for Applier {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let binding = self.shared.runtime.load().workload.clone();
            let mut updates = binding.as_ref().map(|b| {
                b.source.start();
                b.source.subscribe()
            });
            if let Some(b) = binding {
                self.apply(b).await;
            }
            let update = async {
                let changed = match updates.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => false,
                };
                if !changed {
                    // No source (or it is gone): only a swap wakes us.
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                () = self.shared.swapped.notified() => {}
                () = update => {}
            }
        }
    }
}
