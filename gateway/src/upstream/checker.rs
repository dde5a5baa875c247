//! The background service that runs active gRPC health checks and keeps
//! `ztgate_upstream_healthy_backends` current.
//!
//! Each wake it loads the generation in service, so a reload's pools are
//! checked from the next wake on; probes run as their own tasks (a slow
//! backend never delays another pool's schedule) and never overlap for one
//! backend.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use super::probe;
use super::Pool;
use crate::metrics;
use crate::state::Shared;

/// Longest sleep between wakes: bounds how late a reload's new pools are
/// picked up and how stale the gauge gets for pools without active checks.
const MAX_NAP: Duration = Duration::from_millis(500);

pub struct HealthChecker {
    shared: Arc<Shared>,
    connector: Arc<Connector>,
}

impl HealthChecker {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            connector: Arc::new(Connector::new(None)),
        }
    }

    /// Start due probes of `pool`'s backends.
    fn probe_pool(&self, pool: &Arc<Pool>) {
        let Some(hc) = pool.health_check.clone() else {
            return;
        };
        for (addr, health) in pool.backend_health() {
            if !health.start_probe() {
                continue; // the previous probe is still running
            }
            let health = health.clone();
            let connector = self.connector.clone();
            let peer = pool.peer(addr, Some(hc.timeout));
            let authority = pool.authority(addr);
            let name = pool.name.clone();
            let hc = hc.clone();
            tokio::spawn(async move {
                let res = tokio::time::timeout(
                    hc.timeout,
                    probe::check(&connector, &peer, &authority, &hc.service),
                )
                .await;
                let outcome = match res {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                };
                let changed = health.probe_done(
                    outcome.is_ok(),
                    hc.healthy_threshold,
                    hc.unhealthy_threshold,
                );
                match (changed, &outcome) {
                    (Some(true), _) => {
                        tracing::info!(upstream = %name, backend = %addr, "backend healthy")
                    }
                    (Some(false), Err(e)) => tracing::warn!(
                        upstream = %name, backend = %addr, error = %e, "backend unhealthy"
                    ),
                    (_, Err(e)) => tracing::debug!(
                        upstream = %name, backend = %addr, error = %e, "health check failed"
                    ),
                    _ => {}
                }
            });
        }
    }

    /// One wake: start due probes, refresh the gauge; returns when to wake next.
    fn round(
        &self,
        due: &mut HashMap<Arc<str>, Instant>,
        gauged: &mut HashSet<Arc<str>>,
    ) -> Instant {
        let now = Instant::now();
        let mut next = now + MAX_NAP;
        let rt = self.shared.runtime.load_full();
        let mut seen = HashSet::new();
        for pool in rt.pools.values() {
            seen.insert(pool.name.clone());
            metrics::HEALTHY_BACKENDS
                .with_label_values(&[pool.name.as_ref()])
                .set(i64::try_from(pool.healthy_count()).unwrap_or(i64::MAX));
            let Some(hc) = &pool.health_check else {
                continue;
            };
            let at = due.entry(pool.name.clone()).or_insert(now);
            if *at <= now {
                self.probe_pool(pool);
                *at = now + hc.interval;
            }
            next = next.min(*at);
        }
        // Pools gone with a reload: forget their schedule and series.
        due.retain(|name, _| seen.contains(name));
        for gone in gauged.difference(&seen) {
            let _ = metrics::HEALTHY_BACKENDS.remove_label_values(&[gone.as_ref()]);
        }
        *gauged = seen;
        next
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut due = HashMap::new();
        let mut gauged = HashSet::new();
        loop {
            let next = self.round(&mut due, &mut gauged);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
