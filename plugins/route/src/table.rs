//! The compiled route table: which route a request's `:path` and
//! `:authority` fall under.
//!
//! The first route in config order whose match matches wins. Rather than
//! test every pattern per request, the table is indexed at build time:
//! - exact patterns in a hash map keyed by `service/method`;
//! - prefix patterns in a byte trie walked once along `service/method`;
//! - globs by the longest literal they must contain at a fixed place: the
//!   literal start of `service/method` (`orders.*/Get*`), the literal end of
//!   the service (`*.Orders/*`), or the literal start or end of the method
//!   (`*/Get*`, `*/*Items`), each kind in its own trie; only globs that
//!   start and end with `*` in both parts (`*.v1.*/*`) are kept in a list
//!   that is scanned.
//!
//! Every index yields candidate config indices in ascending order; the
//! lookup keeps the lowest one that also passes the authority (and, for a
//! glob, the full pattern) check and stops early at a candidate that cannot
//! beat it. Cost per lookup: one hash probe plus two walks of the path's
//! bytes, plus glob checks for the globs sharing a literal prefix or suffix
//! with the path.

use std::collections::HashMap;
use std::sync::Arc;

use ztgate_filter::Mode;

use crate::pattern::{GlobAnchor, MethodPattern};
use crate::select::SelectEntry;
use crate::trie::Trie;
use ztgate_filter::spiffe::SpiffeAllowList;

/// One route, compiled.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    pub(crate) name: Arc<str>,
    pub(crate) index: usize,
    pub(crate) pattern_text: String,
    pub(crate) pattern: MethodPattern,
    /// Lowercase host without port or trailing dot.
    pub(crate) authority: Option<String>,
    pub(crate) mode: Mode,
    pub(crate) spiffe: Option<SpiffeAllowList>,
    pub(crate) select: Vec<SelectEntry>,
}

impl CompiledRoute {
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Position in `routes:`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// `match.grpc` as configured.
    pub fn pattern_text(&self) -> &str {
        &self.pattern_text
    }

    pub fn pattern(&self) -> &MethodPattern {
        &self.pattern
    }

    /// `match.authority`, normalised (lowercase, no port).
    pub fn authority(&self) -> Option<&str> {
        self.authority.as_deref()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn spiffe(&self) -> Option<&SpiffeAllowList> {
        self.spiffe.as_ref()
    }

    pub fn select(&self) -> &[SelectEntry] {
        &self.select
    }

    fn authority_matches(&self, host: Option<&str>) -> bool {
        match &self.authority {
            None => true,
            Some(want) => host.is_some_and(|h| h.eq_ignore_ascii_case(want)),
        }
    }
}

/// The routes of one config generation, indexed for lookup.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
    exact: HashMap<String, Vec<u32>>,
    prefixes: Trie,
    globs_by_prefix: Trie,
    globs_by_service_suffix: Trie,
    globs_by_method_prefix: Trie,
    globs_by_method_suffix: Trie,
    globs_unanchored: Vec<u32>,
}

impl RouteTable {
    /// Index routes given in config order (`routes[i].index == i`).
    pub(crate) fn new(routes: Vec<CompiledRoute>) -> Self {
        let mut table = Self {
            routes: Vec::new(),
            exact: HashMap::new(),
            prefixes: Trie::new(),
            globs_by_prefix: Trie::new(),
            globs_by_service_suffix: Trie::new(),
            globs_by_method_prefix: Trie::new(),
            globs_by_method_suffix: Trie::new(),
            globs_unanchored: Vec::new(),
        };
        for (i, route) in routes.iter().enumerate() {
            // The build refuses more routes than fit in u32.
            let Ok(id) = u32::try_from(i) else { break };
            match &route.pattern {
                MethodPattern::Exact(key) => table.exact.entry(key.clone()).or_default().push(id),
                MethodPattern::Prefix(p) => table.prefixes.insert(p.bytes(), id),
                MethodPattern::Glob { .. } => match route.pattern.glob_anchor() {
                    Some(GlobAnchor::Prefix(p)) => table.globs_by_prefix.insert(p.bytes(), id),
                    Some(GlobAnchor::ServiceSuffix(s)) => {
                        table.globs_by_service_suffix.insert(s.bytes().rev(), id);
                    }
                    Some(GlobAnchor::MethodPrefix(p)) => {
                        table.globs_by_method_prefix.insert(p.bytes(), id);
                    }
                    Some(GlobAnchor::MethodSuffix(s)) => {
                        table.globs_by_method_suffix.insert(s.bytes().rev(), id);
                    }
                    Some(GlobAnchor::None) | None => table.globs_unanchored.push(id),
                },
            }
        }
        table.routes = routes;
        table
    }

    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route serving `path` (the `:path`, `/package.Service/Method`) at
    /// `authority` (the `:authority`, port and case ignored): the first one
    /// in config order whose match matches. `None` for a path that is not a
    /// gRPC method path or that no route covers.
    pub fn lookup(&self, path: &str, authority: Option<&str>) -> Option<&CompiledRoute> {
        let key = path.strip_prefix('/')?;
        let (service, method) = key.split_once('/')?;
        if service.is_empty() || method.is_empty() || method.contains('/') {
            return None;
        }
        let host = authority.map(host_of);
        let mut best = u32::MAX;
        if let Some(ids) = self.exact.get(key) {
            self.first_fit(ids, &mut best, host, None);
        }
        self.prefixes.for_each_prefix_of(key.bytes(), |ids| {
            self.first_fit(ids, &mut best, host, None);
        });
        let glob = Some((service, method));
        let mut check_glob = |ids: &[u32]| self.first_fit(ids, &mut best, host, glob);
        self.globs_by_prefix
            .for_each_prefix_of(key.bytes(), &mut check_glob);
        self.globs_by_service_suffix
            .for_each_prefix_of(service.bytes().rev(), &mut check_glob);
        self.globs_by_method_prefix
            .for_each_prefix_of(method.bytes(), &mut check_glob);
        self.globs_by_method_suffix
            .for_each_prefix_of(method.bytes().rev(), &mut check_glob);
        check_glob(&self.globs_unanchored);
        self.routes.get(usize::try_from(best).ok()?)
    }

    /// Lower `best` to the first id in `ids` (ascending) that passes the
    /// authority check and, for glob candidates, the full pattern.
    fn first_fit(
        &self,
        ids: &[u32],
        best: &mut u32,
        host: Option<&str>,
        glob: Option<(&str, &str)>,
    ) {
        for &id in ids {
            if id >= *best {
                return;
            }
            let Some(route) = self.routes.get(id as usize) else {
                continue;
            };
            if !route.authority_matches(host) {
                continue;
            }
            if let Some((service, method)) = glob {
                if !route.pattern.matches(service, method) {
                    continue;
                }
            }
            *best = id;
            return;
        }
    }

    /// Index size, for `ztgate explain` and the bench report.
    pub fn trie_nodes(&self) -> usize {
        self.prefixes.node_count()
            + self.globs_by_prefix.node_count()
            + self.globs_by_service_suffix.node_count()
            + self.globs_by_method_prefix.node_count()
            + self.globs_by_method_suffix.node_count()
    }
}

/// The host part of an `:authority`: without port and trailing dot
/// (`API.example.com.:443` → `API.example.com`; `[::1]:8443` → `[::1]`).
pub(crate) fn host_of(authority: &str) -> &str {
    let host = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_strips_port_and_dot() {
        assert_eq!(host_of("api.example.com"), "api.example.com");
        assert_eq!(host_of("api.example.com:443"), "api.example.com");
        assert_eq!(host_of("api.example.com.:443"), "api.example.com");
        assert_eq!(host_of("[::1]:8443"), "[::1]");
        assert_eq!(host_of("[::1]"), "[::1]");
    }
}
