//! Shared config vocabulary: the `mode` every filter and route has, the
//! problems a config build reports, and what a build needs to know about
//! the file it came from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

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
}
