//! Shared config vocabulary: the built-in filters and their names, the
//! `mode` every filter and route has, the problems a config build reports,
//! and what a build needs to know about the file it came from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// The built-in filters: the one list of their names.
///
/// The name is what `pipeline:` lists, what [`crate::Filter::name`]
/// returns and the `filter` label of metrics; [`FilterKind::section`] is
/// the key of its config section. A new filter added here is a compile
/// error in every `match` that must learn about it (the gateway's chain
/// builder), instead of a string that is silently unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterKind {
    Sanitize,
    Mtls,
    Jwt,
    Device,
    Route,
    Ratelimit,
    Policy,
}

impl FilterKind {
    /// Every built-in filter, in a sensible default order: headers cleaned,
    /// then who the peer is, which token, which device, where it goes, and
    /// how often, and last the policy over everything learned (each filter
    /// reads what the earlier ones learned).
    pub const ALL: [FilterKind; 7] = [
        FilterKind::Sanitize,
        FilterKind::Mtls,
        FilterKind::Jwt,
        FilterKind::Device,
        FilterKind::Route,
        FilterKind::Ratelimit,
        FilterKind::Policy,
    ];

    /// The name in `pipeline:` and in the `filter` label of metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterKind::Sanitize => "sanitize",
            FilterKind::Mtls => "mtls",
            FilterKind::Jwt => "jwt",
            FilterKind::Device => "device",
            FilterKind::Route => "route",
            FilterKind::Ratelimit => "ratelimit",
            FilterKind::Policy => "policy",
        }
    }

    /// The top-level key of the filter's config section. It is the filter's
    /// name except for `route`, whose section is a list of routes
    /// (`routes:`), not one settings block.
    pub fn section(self) -> &'static str {
        match self {
            FilterKind::Route => "routes",
            other => other.as_str(),
        }
    }

    /// The filter named `name` in `pipeline:`, if it is a built-in one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for FilterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `mode: enforce | shadow` of a filter, a route or a policy.
///
/// Shadow evaluates and records what it would have decided (metrics, audit
/// `shadow_deny`) without denying: how a policy is rolled out safely.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// One problem found while building a config section.
///
/// `path` is the key path in the YAML document (`routes[2].select[0].upstream`);
/// the gateway turns it into `FILE:LINE` when printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// What a section build needs to know about its surroundings.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// The folder of the config file: relative paths resolve against it.
    pub base_dir: PathBuf,
    /// Names of the configured upstream pools (for reference checks).
    pub upstreams: Vec<String>,
    /// The filters of `pipeline:`, in order (for order checks).
    pub pipeline: Vec<String>,
    /// Long-lived state to claim instead of creating it afresh, so that it
    /// carries over a reload ([`crate::Memory`]).
    pub memory: Arc<crate::Memory>,
    /// The store shared by every replica, when `state.backend` is not
    /// `memory`.
    pub state: Option<crate::SharedState>,
}

impl BuildContext {
    /// Resolve a path from the config against the config file's folder.
    pub fn resolve(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Position of a filter in `pipeline:`, if present.
    pub fn position(&self, filter: &str) -> Option<usize> {
        self.pipeline.iter().position(|f| f == filter)
    }

    /// Whether `first` runs ahead of `then` in `pipeline:`, so that the
    /// facts `first` learns (a token, a peer identity, a route) exist when
    /// `then` reads them. A `then` absent from the pipeline is not
    /// constrained: its section is being built on its own (a unit test, a
    /// bench), and the gateway builds no filter that is not in the pipeline.
    pub fn runs_before(&self, first: FilterKind, then: FilterKind) -> bool {
        match (self.position(first.as_str()), self.position(then.as_str())) {
            (Some(f), Some(t)) => f < t,
            (None, Some(_)) => false,
            (_, None) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pipeline: &[&str]) -> BuildContext {
        BuildContext {
            pipeline: pipeline.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn runs_before_reads_the_pipeline_order() {
        use FilterKind::{Jwt, Route};
        assert!(ctx(&["jwt", "route"]).runs_before(Jwt, Route));
        assert!(!ctx(&["route", "jwt"]).runs_before(Jwt, Route));
        assert!(!ctx(&["route"]).runs_before(Jwt, Route));
        // `route` built on its own: nothing to order against.
        assert!(ctx(&["jwt"]).runs_before(Jwt, Route));
        assert!(ctx(&[]).runs_before(Jwt, Route));
    }

    #[test]
    fn every_filter_name_round_trips() {
        for k in FilterKind::ALL {
            assert_eq!(FilterKind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(FilterKind::from_name("routes"), None);
        assert_eq!(FilterKind::Route.section(), "routes");
        assert_eq!(FilterKind::Jwt.section(), "jwt");
    }
}
