//! Upstream pools: backends, the TLS settings to reach them, and selection.
//!
//! A pool is built from config once per generation; selection is lock-free
//! (an atomic round-robin counter over a weight-expanded list).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::ALPN;
use pingora::tls::x509::X509;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;
use ztgate_filter::{BuildContext, ConfigProblem};

use crate::config::raw;
use crate::tls::material::{self, CertAndKey};

/// How to reach a pool's backends over TLS.
pub struct PoolTls {
    pub sni: String,
    pub ca: Option<Arc<Box<[X509]>>>,
    pub client: Option<Arc<CertKey>>,
    /// `notAfter` of the client certificate, for the expiry gauge.
    pub client_not_after: Option<std::time::SystemTime>,
}

/// One upstream pool.
pub struct Pool {
    pub name: Arc<str>,
    pub backends: Vec<SocketAddr>,
    /// Backends repeated by weight, interleaved, for round-robin.
    schedule: Vec<usize>,
    next: AtomicUsize,
    pub tls: Option<PoolTls>,
    pub connect_timeout: Duration,
    pub request_timeout: Option<Duration>,
    pub max_streams: usize,
    pub lb: raw::LbPolicy,
}

impl Pool {
    /// Build a pool, reporting every problem under `upstreams.NAME`.
    pub fn build(
        name: &str,
        raw: &raw::Upstream,
        ctx: &BuildContext,
    ) -> Result<Pool, Vec<ConfigProblem>> {
        let path = format!("upstreams.{name}");
        let mut problems = Vec::new();
        let mut backends = Vec::new();
        let mut weights = Vec::new();
        if raw.backends.is_empty() {
            problems.push(ConfigProblem::new(
                format!("{path}.backends"),
                "a pool needs at least one backend",
            ));
        }
        for (i, b) in raw.backends.iter().enumerate() {
            let at = format!("{path}.backends[{i}]");
            if b.weight() == 0 {
                problems.push(ConfigProblem::new(
                    format!("{at}.weight"),
                    "weight must be at least 1",
                ));
            }
            // Resolved once here: Pingora's HttpPeer::new would panic on a
            // DNS failure at request time (notes §5).
            match b.address().to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => {
                    backends.push(addr);
                    weights.push(b.weight().min(100));
                }
                Ok(None) | Err(_) => problems.push(ConfigProblem::new(
                    at,
                    format!("`{}` is not a resolvable host:port", b.address()),
                )),
            }
        }
        let tls = match &raw.tls {
            None => None,
            Some(t) => match pool_tls(t, ctx, &format!("{path}.tls")) {
                Ok(t) => Some(t),
                Err(mut p) => {
                    problems.append(&mut p);
                    None
                }
            },
        };
        if raw.max_streams_per_connection == 0 {
            problems.push(ConfigProblem::new(
                format!("{path}.max_streams_per_connection"),
                "must be at least 1",
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Pool {
            name: Arc::from(name),
            schedule: interleave(&weights),
            backends,
            next: AtomicUsize::new(0),
            tls,
            connect_timeout: raw.connect_timeout,
            request_timeout: (!raw.request_timeout.is_zero()).then_some(raw.request_timeout),
            max_streams: raw.max_streams_per_connection,
            lb: raw.lb,
        })
    }

    /// The next backend in round-robin order.
    pub fn select(&self) -> Option<SocketAddr> {
        let raw::LbPolicy::RoundRobin = self.lb;
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        self.schedule
            .get(n)
            .and_then(|i| self.backends.get(*i))
            .copied()
    }

    /// A Pingora peer for one backend of this pool.
    pub fn peer(&self, addr: SocketAddr, read_timeout: Option<Duration>) -> HttpPeer {
        let mut peer = match &self.tls {
            None => HttpPeer::new(addr, false, String::new()),
            Some(t) => {
                let mut p = match &t.client {
                    Some(ck) => HttpPeer::new_mtls(addr, t.sni.clone(), ck.clone()),
                    None => HttpPeer::new(addr, true, t.sni.clone()),
                };
                p.options.ca = t.ca.clone();
                p.options.verify_cert = true;
                p.options.verify_hostname = true;
                p
            }
        };
        // gRPC is HTTP/2 only: h2c prior knowledge, or ALPN h2 over TLS.
        peer.options.alpn = ALPN::H2;
        peer.options.max_h2_streams = self.max_streams;
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout * 2);
        peer.options.h2_ping_interval = Some(Duration::from_secs(30));
        peer.options.idle_timeout = Some(Duration::from_secs(90));
        // Per-read timeout only when the call has a deadline: it would kill
        // idle but healthy long-lived streams otherwise.
        peer.options.read_timeout = read_timeout;
        peer
    }
}

fn pool_tls(
    t: &raw::UpstreamTls,
    ctx: &BuildContext,
    path: &str,
) -> Result<PoolTls, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let ca = match &t.ca {
        None => None,
        Some(p) => match material::load_certs(&ctx.resolve(p)) {
            Ok(certs) => Some(Arc::new(certs.into_boxed_slice())),
            Err(e) => {
                problems.push(ConfigProblem::new(format!("{path}.ca"), e.to_string()));
                None
            }
        },
    };
    if t.sni.is_empty() {
        problems.push(ConfigProblem::new(
            format!("{path}.sni"),
            "must name the backend's server name",
        ));
    }
    let (client, client_not_after) = match (&t.cert, &t.key) {
        (None, None) => (None, None),
        (Some(c), Some(k)) => match CertAndKey::load(&ctx.resolve(c), &ctx.resolve(k)) {
            Ok(ck) => {
                let na = ck.not_after();
                (Some(Arc::new(CertKey::new(ck.chain, ck.key))), na)
            }
            Err(errs) => {
                for e in errs {
                    problems.push(ConfigProblem::new(format!("{path}.cert"), e.to_string()));
                }
                (None, None)
            }
        },
        _ => {
            problems.push(ConfigProblem::new(
                path.to_owned(),
                "`cert` and `key` must be given together",
            ));
            (None, None)
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(PoolTls {
        sni: t.sni.clone(),
        ca,
        client,
        client_not_after,
    })
}

/// Smooth weighted round-robin order (nginx's algorithm): weights 3,1 give
/// 0,0,1,0 rather than 0,0,0,1.
fn interleave(weights: &[usize]) -> Vec<usize> {
    let total: usize = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            if let Some(c) = current.get_mut(i) {
                *c += *w as i64;
            }
            if current.get(i) > current.get(best) {
                best = i;
            }
        }
        if let Some(c) = current.get_mut(best) {
            *c -= total as i64;
        }
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_order() {
        assert_eq!(interleave(&[1, 1]), vec![0, 1]);
        assert_eq!(interleave(&[3, 1]), vec![0, 0, 1, 0]);
        assert_eq!(interleave(&[5, 1, 1]).len(), 7);
    }
}
