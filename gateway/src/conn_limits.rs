//! Connection caps on the client listener: `listener.max_connections` (all
//! clients) and `listener.max_connections_per_ip` (one client IP), both off
//! by default; and the `ztgate_connections_open` gauge.
//!
//! Why before TLS: a TLS handshake with client-certificate verification is
//! the most expensive thing a client can make us do, and one a client with
//! no certificate at all can ask for. So the caps are applied in Pingora's
//! pre-TLS hook, right after accept: a connection over a cap is closed
//! there, before a byte of TLS, and counted in
//! `ztgate_connections_refused_total{reason}`. During a drain (SIGTERM) new
//! connections are closed the same way (`reason="draining"`): the load
//! balancer has been told by `/readyz`, and open connections keep serving.
//!
//! Which IP: the per-IP cap applies after the PROXY protocol header (see
//! `proxy_protocol.rs`) has been read, so behind a trusted balancer it caps
//! each real client, not the balancer. The global cap is taken first, so a
//! connection waiting for its PROXY header holds a slot too.
//!
//! How a connection is counted until it closes: Pingora gives a hook at
//! accept but none at close. The L4 stream has a `tracer` slot, though,
//! which it owns (and never clones on the server side) until the socket is
//! dropped — whether the TLS handshake fails, times out, or the connection
//! ends after serving. The [`Ticket`] holding the slots goes there, and its
//! `Drop` gives them back.

#![deny(clippy::indexing_slicing)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::GetSocketDigest;
use pingora::upstreams::peer::{Tracer, Tracing};
use pingora::{ErrorSource, ErrorType};

use crate::drain::Drain;
use crate::metrics;

/// Why a connection was closed right after accept: the `reason` label of
/// `ztgate_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `listener.max_connections_per_ip` reached for its client IP.
    PerIp,
    /// `listener.max_connections` reached.
    Global,
    /// SIGTERM: the gateway is draining.
    Draining,
}

impl Refused {
    /// Every reason, so their series exist at zero from the start.
    pub const ALL: [Refused; 3] = [Refused::PerIp, Refused::Global, Refused::Draining];

    pub fn label(self) -> &'static str {
        match self {
            Refused::PerIp => "per_ip",
            Refused::Global => "global",
            Refused::Draining => "draining",
        }
    }
}

/// The caps, from `listener:` (read at start-up).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    pub total: Option<NonZeroUsize>,
    pub per_ip: Option<NonZeroUsize>,
}

/// Open connections, in all and per client IP.
#[derive(Debug)]
pub struct Table {
    caps: Caps,
    open: AtomicUsize,
    /// Only kept when `per_ip` is set; an IP's entry goes with its last
    /// connection, so the map is never larger than the open connections.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Table {
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot among all connections, or `Global` when the cap is reached.
    pub fn admit(self: &Arc<Self>) -> Result<Slot, Refused> {
        let now = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        // Made before the check, so that the refused one gives its count back.
        let slot = Slot {
            table: self.clone(),
            ip: None,
        };
        metrics::CONNECTIONS_OPEN.inc();
        match self.caps.total {
            Some(max) if now > max.get() => Err(Refused::Global),
            _ => Ok(slot),
        }
    }

    /// Count `slot` against `ip` too, or `PerIp` when that IP is at its cap
    /// (the slot is then given back when dropped).
    pub fn admit_ip(&self, slot: &mut Slot, ip: IpAddr) -> Result<(), Refused> {
        let Some(max) = self.caps.per_ip else {
            return Ok(());
        };
        let mut map = self.per_ip.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= max.get() {
            return Err(Refused::PerIp);
        }
        *n += 1;
        slot.ip = Some(ip);
        Ok(())
    }

    fn release(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            let mut map = self.per_ip.lock();
            if let Some(n) = map.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        metrics::CONNECTIONS_OPEN.dec();
    }
}

/// One open connection's place in the [`Table`]; given back on drop.
#[derive(Debug)]
pub struct Slot {
    table: Arc<Table>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.release(self.ip);
    }
}

/// What rides in the L4 stream's tracer slot (see the module docs): the
/// connection's [`Slot`], given back when the socket is dropped.
#[derive(Debug)]
struct Ticket {
    /// Held for its `Drop`.
    _slot: Option<Slot>,
}

impl Tracing for Ticket {
    fn on_connected(&self) {}
    // The slot is given back by `Drop`, right after this, when the stream
    // drops its tracer.
    fn on_disconnected(&self) {}
    // Never called for a server-side stream; a copy must not own the slot
    // (it would be given back twice).
    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(Ticket { _slot: None })
    }
}

/// The client listener's pre-TLS hook: the drain and the caps around the
/// PROXY protocol reader (Pingora takes one hook per listener).
pub struct AcceptGate<P> {
    table: Arc<Table>,
    drain: Arc<Drain>,
    /// What runs between the global and the per-IP check: the PROXY
    /// protocol reader, which may change the client address.
    inner: P,
}

impl<P> AcceptGate<P> {
    pub fn new(table: Arc<Table>, drain: Arc<Drain>, inner: P) -> Self {
        Self {
            table,
            drain,
            inner,
        }
    }
}

fn refuse(stream: &L4Stream, why: Refused) -> pingora::BError {
    metrics::CONNECTIONS_REFUSED
        .with_label_values(&[why.label()])
        .inc();
    let peer = client_ip(stream);
    tracing::debug!(peer = ?peer, reason = why.label(), "connection refused at accept");
    pingora::Error::create(
        ErrorType::Custom("ConnectionRefused"),
        ErrorSource::Downstream,
        Some(format!("connection refused: {}", why.label()).into()),
        None,
    )
}

/// The client's IP as the rest of the gateway will see it.
fn client_ip(stream: &L4Stream) -> Option<IpAddr> {
    let d = stream.get_socket_digest()?;
    let a = d.peer_addr()?.as_inet()?;
    Some(a.ip().to_canonical())
}

#[async_trait]
impl<P: PreTlsProcess> PreTlsProcess for AcceptGate<P> {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        if self.drain.is_draining() {
            return Err(refuse(stream, Refused::Draining));
        }
        let mut slot = match self.table.admit() {
            Ok(s) => s,
            Err(why) => return Err(refuse(stream, why)),
        };
        // On error the slot is dropped here and given back.
        self.inner.process(stream).await?;
        if let Some(ip) = client_ip(stream) {
            if let Err(why) = self.table.admit_ip(&mut slot, ip) {
                return Err(refuse(stream, why));
            }
        }
        stream.tracer = Some(Tracer(Box::new(Ticket { _slot: Some(slot) })));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per_ip: usize) -> Caps {
        Caps {
            total: NonZeroUsize::new(total),
            per_ip: NonZeroUsize::new(per_ip),
        }
    }

    #[test]
    fn global_cap_counts_and_gives_back() {
        let t = Table::new(caps(2, 0));
        let a = t.admit().unwrap();
        let b = t.admit().unwrap();
        assert_eq!(t.admit().unwrap_err(), Refused::Global);
        // The refused one gave its count back.
        assert_eq!(t.open(), 2);
        drop(a);
        assert_eq!(t.open(), 1);
        let _c = t.admit().unwrap();
        drop(b);
        assert_eq!(t.open(), 1);
    }

    #[test]
    fn per_ip_cap_is_per_address() {
        let t = Table::new(caps(0, 2));
        let one: IpAddr = [10, 0, 0, 1].into();
        let two: IpAddr = [10, 0, 0, 2].into();
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = t.admit().unwrap();
            t.admit_ip(&mut s, one).unwrap();
            held.push(s);
        }
        let mut third = t.admit().unwrap();
        assert_eq!(t.admit_ip(&mut third, one).unwrap_err(), Refused::PerIp);
        drop(third);
        let mut other = t.admit().unwrap();
        t.admit_ip(&mut other, two).unwrap();
        assert_eq!(t.open(), 3);
        // Closing one of `one`'s lets the next in; an IP's entry goes with
        // its last connection.
        held.pop();
        let mut again = t.admit().unwrap();
        t.admit_ip(&mut again, one).unwrap();
        drop((held, again, other));
        assert_eq!(t.open(), 0);
        assert!(t.per_ip.lock().is_empty());
    }

    /// A ticket's copy owns nothing: only the original gives the slot back.
    #[test]
    fn ticket_copies_do_not_release_twice() {
        let t = Table::new(caps(0, 1));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let mut s = t.admit().unwrap();
        t.admit_ip(&mut s, ip).unwrap();
        let ticket: Box<dyn Tracing> = Box::new(Ticket { _slot: Some(s) });
        drop(ticket.boxed_clone());
        assert_eq!(t.open(), 1);
        drop(ticket);
        assert_eq!(t.open(), 0);
    }
}
