//! The SPIFFE Workload API as a source of identity and trust
//! (`spiffe.workload_api`).
//!
//! The SPIRE agent (or any Workload API server) on the node hands the
//! gateway its X.509-SVID and the X.509 bundles of its trust domain and of
//! the federated ones, and streams a new message on every rotation
//! ([SPIFFE Workload API §5, X.509-SVID profile](https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Workload_API.md)).
//! With `use_for: [listener]` the SVID is the listener's certificate; with
//! `use_for: [trust]` the bundles are client trust per trust domain, held
//! to the same binding as `mtls.trust_bundles` (`crate::tls::trust`): a
//! federated partner's CA can never vouch for our trust domain.
//!
//! Each accepted update is combined with the generation's file material
//! ([`crate::tls::ServerMaterial::compose`]) and swapped into the same
//! `ArcSwap` a reload swaps ([`apply::Applier`]): new handshakes use it at
//! once, open connections keep the material they were made with, and no
//! reload happens. While the agent is down or restarting, the last good
//! material keeps serving and the stream is reopened with capped
//! exponential backoff ([`source`]). `/readyz` answers 503 until the first
//! material has arrived.
//!
//! The parts: [`wire`] (the messages and the gRPC call over HTTP/2 on the
//! Unix socket), [`context`] (an update checked into TLS material),
//! [`source`] (the stream kept open), [`apply`] (into the listener).

pub mod apply;
pub mod context;
pub mod source;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;

use ztgate_filter::{ConfigProblem, Memory, SpiffeId};

use crate::config::raw::{Spiffe, SpiffeUse};
use crate::tls::material::{MaterialError, Part};
use crate::tls::{FileMaterial, ServerMaterial, WorkloadParts};
pub use source::WorkloadSource;
use wire::Method;

/// `spiffe:` checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The agent's socket.
    pub socket: PathBuf,
    /// The SVID is the listener's certificate.
    pub listener: bool,
    /// The bundles are client trust per trust domain.
    pub trust: bool,
    /// The SVID is the upstreams' client certificate.
    pub upstream: bool,
    /// `spiffe.svid`.
    pub svid: Option<String>,
}

/// Check the `spiffe:` section; problems are added with their keys.
pub fn check(raw: &Spiffe, problems: &mut Vec<ConfigProblem>) -> Option<Settings> {
    let before = problems.len();
    let socket = raw
        .workload_api
        .strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from);
    if socket.is_none() {
        problems.push(ConfigProblem::new(
            "spiffe.workload_api",
            format!(
                "`{}` is not a unix:///ABSOLUTE/PATH address (the SPIRE agent's socket; only Unix sockets are supported)",
                raw.workload_api.chars().take(200).collect::<String>()
            ),
        ));
    }
    if raw.use_for.is_empty() {
        problems.push(ConfigProblem::new(
            "spiffe.use_for",
            "needs one or more of `listener`, `trust`, `upstream`",
        ));
    }
    for (i, u) in raw.use_for.iter().enumerate() {
        if raw.use_for.iter().take(i).any(|v| v == u) {
            problems.push(ConfigProblem::new(
                format!("spiffe.use_for[{i}]"),
                "appears twice",
            ));
        }
    }
    let listener = raw.use_for.contains(&SpiffeUse::Listener);
    let upstream = raw.use_for.contains(&SpiffeUse::Upstream);
    if let Some(id) = &raw.svid {
        if SpiffeId::parse(id).is_err() {
            problems.push(ConfigProblem::new(
                "spiffe.svid",
                format!("`{id}` is not a SPIFFE ID"),
            ));
        } else if !listener && !upstream {
            problems.push(ConfigProblem::new(
                "spiffe.svid",
                "chooses the gateway's SVID: needs `listener` or `upstream` in spiffe.use_for",
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Settings {
        socket: socket?,
        listener,
        trust: raw.use_for.contains(&SpiffeUse::Trust),
        upstream,
        svid: raw.svid.clone(),
    })
}

/// A generation's use of the Workload API: its source, and the file
/// material the source's updates are combined with.
pub struct Binding {
    pub source: Arc<WorkloadSource>,
    pub settings: Settings,
    files: FileMaterial,
}

impl Binding {
    /// The source for `settings`, claimed from `memory` (so that a reload
    /// keeps the stream and its last material), with this generation's
    /// `files`.
    pub fn new(settings: Settings, files: FileMaterial, memory: &Memory) -> Self {
        // With an SVID to use, FetchX509SVID (it carries the bundles too);
        // for trust alone, FetchX509Bundles, which needs no SVID to be
        // registered for the gateway.
        let method = if settings.listener || settings.upstream {
            Method::X509Svid
        } else {
            Method::X509Bundles
        };
        let key = format!(
            "spiffe.workload_api\n{}\n{method:?}\n{:?}",
            settings.socket.display(),
            settings.svid
        );
        let source = memory.claim(&key, || {
            WorkloadSource::new(settings.socket.clone(), method, settings.svid.clone())
        });
        Self {
            source,
            settings,
            files,
        }
    }

    /// The listener's material now: the files with the last good update
    /// over them.
    pub fn compose(&self) -> Result<ServerMaterial, Vec<(Part, MaterialError)>> {
        let latest = self.source.latest();
        let parts = WorkloadParts {
            identity: latest
                .as_ref()
                .filter(|_| self.settings.listener)
                .and_then(|c| c.svid.as_ref().map(|(_, ck)| ck)),
            bundles: latest
                .as_ref()
                .filter(|_| self.settings.trust)
                .map(|c| &c.bundles),
            trust_from_api: self.settings.trust,
        };
        ServerMaterial::compose(&self.files, &parts)
    }

    /// Why the gateway is not ready on this account: no material from the
    /// agent yet, or (`in_force`, what handshakes use) its SVID not in
    /// force because it could not be combined with the files.
    pub fn not_ready(&self, in_force: &ServerMaterial) -> Option<String> {
        let socket = self.settings.socket.display();
        if self.source.latest().is_none() {
            return Some(format!(
                "no TLS material yet from the SPIFFE Workload API at unix://{socket}"
            ));
        }
        let svid_wanted = self.settings.listener || self.settings.upstream;
        if svid_wanted && self.source.latest().is_some_and(|c| c.svid.is_none()) {
            return Some(format!(
                "no SVID yet from the SPIFFE Workload API at unix://{socket}"
            ));
        }
        (self.settings.listener && in_force.identity.is_none()).then(|| {
            format!(
                "the SPIFFE Workload API's SVID (unix://{socket}) is not in force yet: see the log"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(addr: &str, use_for: &[SpiffeUse], svid: Option<&str>) -> Spiffe {
        Spiffe {
            workload_api: addr.into(),
            use_for: use_for.to_vec(),
            svid: svid.map(str::to_owned),
        }
    }

    #[test]
    fn settings_are_checked_with_their_keys() {
        let both = [SpiffeUse::Listener, SpiffeUse::Trust];
        let mut p = Vec::new();
        let s = check(&raw("unix:///run/spire/agent.sock", &both, None), &mut p).unwrap();
        assert!(p.is_empty());
        assert_eq!(s.socket, PathBuf::from("/run/spire/agent.sock"));
        assert!(s.listener && s.trust);

        for (r, key, want) in [
            (
                raw("tcp://127.0.0.1:8081", &both, None),
                "spiffe.workload_api",
                "unix:///",
            ),
            (
                raw("unix://relative.sock", &both, None),
                "spiffe.workload_api",
                "ABSOLUTE",
            ),
            (raw("unix:///a", &[], None), "spiffe.use_for", "needs"),
            (
                raw("unix:///a", &[SpiffeUse::Trust, SpiffeUse::Trust], None),
                "spiffe.use_for[1]",
                "twice",
            ),
            (
                raw("unix:///a", &both, Some("acme.test/gw")),
                "spiffe.svid",
                "not a SPIFFE ID",
            ),
            (
                raw(
                    "unix:///a",
                    &[SpiffeUse::Trust],
                    Some("spiffe://acme.test/gw"),
                ),
                "spiffe.svid",
                "needs `listener` or `upstream`",
            ),
        ] {
            let mut p = Vec::new();
            assert!(check(&r, &mut p).is_none(), "{r:?}");
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].path, key);
            assert!(p[0].message.contains(want), "{}", p[0].message);
        }
    }
}
