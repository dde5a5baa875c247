//! The background service that runs active gRPC health checks and keeps
//! `ztgate_upstream_healthy_backends` current.
//!
//! Each wake it loads the generation in service, so a reload's pools are
//! checked from the next wake on; probes run as their own tasks (a slow
//! backend never delays another pool's schedule) and never overlap for one
//! backend. It also looks backend names up again every `dns_refresh`, on the
//! blocking pool, and swaps a pool's member set when the answer changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use super::{probe, resolve, Pool};
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
        let members = pool.members();
        for (addr, health) in members.backend_health() {
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

    /// Look `pool`'s backend names up again, off the async threads; a failed
    /// lookup keeps the members it has.
    fn refresh_dns(pool: &Arc<Pool>) {
        if !pool.start_resolve() {
            return; // the previous lookup is still running
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let specs = pool.specs().to_vec();
            match tokio::task::spawn_blocking(move || resolve::resolve_all(&specs)).await {
                Ok(Ok(resolved)) => {
                    let changed = pool.resolved(&resolved);
                    metrics::DNS_REFRESH
                        .with_label_values(&[
                            pool.name.as_ref(),
                            if changed { "changed" } else { "unchanged" },
                        ])
                        .inc();
                    if changed {
                        let members: Vec<String> =
                            resolved.iter().map(|(a, _)| a.to_string()).collect();
                        tracing::info!(
                            upstream = %pool.name,
                            backends = %members.join(" "),
                            "backend names resolve to a new set"
                        );
                    }
                }
                Ok(Err(errs)) => {
                    pool.resolve_failed();
                    metrics::DNS_REFRESH
                        .with_label_values(&[pool.name.as_ref(), "error"])
                        .inc();
                    for (_, e) in errs {
                        tracing::warn!(upstream = %pool.name, error = %e, "DNS refresh failed; keeping the current backends");
                    }
                }
                Err(e) => {
                    pool.resolve_failed();
                    metrics::DNS_REFRESH
                        .with_label_values(&[pool.name.as_ref(), "error"])
                        .inc();
                    tracing::warn!(upstream = %pool.name, error = %e, "DNS refresh task failed");
                }
            }
        });
    }

    /// One wake: start due probes and lookups, refresh the gauge; returns
    /// when to wake next.
    fn round(
        &self,
        due: &mut HashMap<Arc<str>, Instant>,
        dns_due: &mut HashMap<Arc<str>, Instant>,
        gauged: &mut HashSet<Arc<str>>,
    ) -> Instant {
        let now = Instant::now();
        let mut next = now + MAX_NAP;
        let rt = self.shared.runtime.load_full();
        let mut seen = HashSet::new();
        for pool in rt.pools.values() {
            seen.insert(pool.name.clone());
            if let Some(every) = pool.dns_refresh {
                // The first lookup happened at load: wait one interval.
                let at = dns_due.entry(pool.name.clone()).or_insert(now + every);
                if *at <= now {
                    Self::refresh_dns(pool);
                    *at = now + every;
                }
                next = next.min(*at);
            }
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
        dns_due.retain(|name, _| seen.contains(name));
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
        let mut dns_due = HashMap::new();
        let mut gauged = HashSet::new();
        loop {
            let next = self.round(&mut due, &mut dns_due, &mut gauged);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw;
    use ztgate_filter::BuildContext;

    #[tokio::test]
    async fn refresh_replaces_a_stale_member_set_with_what_the_names_resolve_to() {
        let raw: raw::Upstream = serde_yaml::from_str("backends: ['localhost:7']").unwrap();
        let ctx = BuildContext {
            base_dir: std::env::temp_dir(),
            upstreams: vec!["dns".into()],
            pipeline: vec![],
            ..Default::default()
        };
        let pool = Arc::new(Pool::build("dns", &raw, &ctx).unwrap());
        let want = pool.members().backends.clone();
        // Pretend the name used to point elsewhere.
        assert!(pool.start_resolve());
        assert!(pool.resolved(&[("192.0.2.1:7".parse().unwrap(), 1)]));
        assert_ne!(pool.members().backends, want);

        HealthChecker::refresh_dns(&pool);
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.members().backends != want {
            assert!(Instant::now() < deadline, "the lookup never landed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Counted right after the swap.
        while metrics::DNS_REFRESH
            .with_label_values(&["dns", "changed"])
            .get()
            == 0
        {
            assert!(Instant::now() < deadline, "the change was never counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The slot is freed right after the swap, for the next round.
        while !pool.start_resolve() {
            assert!(
                Instant::now() < deadline,
                "the lookup slot was never released"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
