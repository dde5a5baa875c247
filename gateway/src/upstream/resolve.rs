//! Backend names and the addresses they stand for.
//!
//! A backend is written `ip:port` or `host:port`. A name stands for every
//! address it resolves to — a Kubernetes headless Service answers with one
//! address per ready pod — each carrying the entry's weight. Names are looked
//! up at load and then every `dns_refresh` by the health checker, off the
//! async threads (`getaddrinfo` blocks). A failed or empty lookup keeps the
//! addresses the pool already has: a DNS hiccup must never empty a pool.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// The largest weight a backend entry keeps.
pub const MAX_WEIGHT: usize = 100;

/// One `backends:` entry as written in the config.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// `ip:port` or `host:port`, as written.
    pub address: String,
    pub weight: usize,
    /// The address itself when the entry is a literal `ip:port`.
    literal: Option<SocketAddr>,
}

/// Why an entry has no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("`{0}` is not a host:port")]
    Malformed(String),
    #[error("`{0}` did not resolve: {1}")]
    Lookup(String, io::Error),
    #[error("`{0}` resolved to no address")]
    Empty(String),
}

impl BackendSpec {
    /// Weights are capped at 100: the round-robin schedule repeats each
    /// backend `weight` times, so a huge weight would only cost memory.
    pub fn new(address: &str, weight: usize) -> Self {
        Self {
            address: address.to_owned(),
            weight: weight.min(MAX_WEIGHT),
            literal: address.parse().ok(),
        }
    }

    /// Whether this entry is a DNS name (and so worth looking up again).
    pub fn is_name(&self) -> bool {
        self.literal.is_none()
    }

    /// The addresses this entry stands for now, sorted.
    fn addresses(&self) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Some(a) = self.literal {
            return Ok(vec![a]);
        }
        // `host:port` with a numeric port; anything else would make
        // `to_socket_addrs` guess (e.g. a bare name has no port at all).
        let well_formed = self
            .address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !well_formed {
            return Err(ResolveError::Malformed(self.address.clone()));
        }
        let mut addrs: Vec<SocketAddr> = self
            .address
            .to_socket_addrs()
            .map_err(|e| ResolveError::Lookup(self.address.clone(), e))?
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::Empty(self.address.clone()));
        }
        // Resolvers rotate their answers; a stable order keeps an unchanged
        // set from looking changed.
        addrs.sort();
        addrs.dedup();
        Ok(addrs)
    }
}

/// A backend address with the weight of the entry it came from.
pub type Weighted = (SocketAddr, usize);

/// Every `(address, weight)` the entries stand for now, in entry order; an
/// address reached through two entries is kept once, with the first entry's
/// weight. Errors name the index of the entry they belong to.
pub fn resolve_all(specs: &[BackendSpec]) -> Result<Vec<Weighted>, Vec<(usize, ResolveError)>> {
    let mut out: Vec<Weighted> = Vec::new();
    let mut errors = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        match spec.addresses() {
            Ok(addrs) => {
                for a in addrs {
                    if !out.iter().any(|(seen, _)| *seen == a) {
                        out.push((a, spec.weight));
                    }
                }
            }
            Err(e) => errors.push((i, e)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_pass_through_and_duplicates_keep_the_first_weight() {
        let specs = [
            BackendSpec::new("127.0.0.1:50051", 3),
            BackendSpec::new("[::1]:50052", 1),
            BackendSpec::new("127.0.0.1:50051", 7),
        ];
        assert!(!specs[0].is_name());
        let got = resolve_all(&specs).unwrap();
        assert_eq!(
            got,
            vec![
                ("127.0.0.1:50051".parse().unwrap(), 3),
                ("[::1]:50052".parse().unwrap(), 1),
            ]
        );
    }

    #[test]
    fn a_name_stands_for_every_address_it_resolves_to() {
        let spec = BackendSpec::new("localhost:50051", 2);
        assert!(spec.is_name());
        let mut want: Vec<SocketAddr> = ("localhost", 50051).to_socket_addrs().unwrap().collect();
        want.sort();
        want.dedup();
        let got = resolve_all(&[spec]).unwrap();
        assert_eq!(got.iter().map(|(a, _)| *a).collect::<Vec<_>>(), want);
        assert!(got.iter().all(|(_, w)| *w == 2));
    }

    #[test]
    fn bad_entries_are_named_by_index() {
        let specs = [
            BackendSpec::new("127.0.0.1:1", 1),
            BackendSpec::new("no-port", 1),
            BackendSpec::new("host:notaport", 1),
            BackendSpec::new(":50051", 1),
            BackendSpec::new("does-not-exist.invalid:50051", 1),
        ];
        let errs = resolve_all(&specs).unwrap_err();
        let idx: Vec<usize> = errs.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, vec![1, 2, 3, 4]);
        assert!(matches!(errs[0].1, ResolveError::Malformed(_)));
        assert!(matches!(
            errs[3].1,
            ResolveError::Lookup(..) | ResolveError::Empty(_)
        ));
        assert!(errs[3].1.to_string().contains("does-not-exist.invalid"));
    }
}
