//! Loading the config file: read, `${VAR}` substitution inside YAML scalars,
//! YAML parsing with key paths, then the build into runtime state (see [`build`]). Every
//! problem is reported as `FILE:LINE: key.path: message`.

pub mod build;
pub mod env;
pub mod lines;
pub mod raw;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use build::{build, Runtime, Static};
use lines::LineIndex;
use ztgate_filter::{ConfigProblem, Memory};

/// A parsed config file with what is needed to point back into it.
pub struct Loaded {
    pub path: PathBuf,
    pub base_dir: PathBuf,
    pub raw: raw::Config,
    pub lines: LineIndex,
}

/// Every problem found in a config file, printable one per line.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: String,
    pub problems: Vec<Located>,
}

/// A problem with its line, when known.
#[derive(Debug, Clone)]
pub struct Located {
    pub line: Option<usize>,
    pub problem: ConfigProblem,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(l) => write!(f, "{}:{}: {}", self.file, l, p.problem)?,
                None => write!(f, "{}: {}", self.file, p.problem)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn one(file: &Path, line: Option<usize>, path: &str, msg: String) -> Self {
        Self {
            file: file.display().to_string(),
            problems: vec![Located {
                line,
                problem: ConfigProblem::new(path, msg),
            }],
        }
    }

    /// Locate build problems in the file.
    pub fn locate(file: &Path, lines: &LineIndex, problems: Vec<ConfigProblem>) -> Self {
        Self {
            file: file.display().to_string(),
            problems: problems
                .into_iter()
                .map(|p| Located {
                    line: lines.line_of(&p.path),
                    problem: p,
                })
                .collect(),
        }
    }
}

/// Read and parse a config file (no semantic checks yet).
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one(path, None, ".", format!("cannot read config file: {e}")))?;
    parse(path, &text, |k| std::env::var(k).ok())
}

/// Parse config text; `env` resolves `${VAR}`.
pub fn parse(
    path: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    // Substituted inside the parsed scalars, never into the raw text, so a
    // value cannot change the document (see [`env`]); lines are kept.
    let expanded = env::expand(text, env).map_err(|problems| ConfigErrors {
        file: path.display().to_string(),
        problems: problems
            .into_iter()
            .map(|e| Located {
                line: Some(e.line()),
                problem: ConfigProblem::new(e.key(), e.to_string()),
            })
            .collect(),
    })?;
    let lines = LineIndex::build(&expanded);
    let de = serde_yaml::Deserializer::from_str(&expanded);
    let raw: raw::Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .location()
            .map(|l| l.line())
            .or_else(|| lines.line_of(&key));
        ConfigErrors::one(path, line, &key, clean_yaml_error(&inner))
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(Loaded {
        path: path.to_path_buf(),
        base_dir,
        raw,
        lines,
    })
}

/// serde_yaml appends " at line X column Y"; we print the line ourselves.
fn clean_yaml_error(e: &serde_yaml::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Load and build: what `check`, `run`, `explain` and reload all call.
/// `memory` is what the new generation inherits (see [`build`]).
pub fn load_and_build(
    path: &Path,
    memory: &Arc<Memory>,
) -> Result<(Loaded, Static, Runtime), ConfigErrors> {
    let loaded = load(path)?;
    match build(&loaded, memory) {
        Ok((st, rt)) => Ok((loaded, st, rt)),
        Err(problems) => Err(ConfigErrors::locate(path, &loaded.lines, problems)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "listener:
  address: ${LISTEN}
  tls:
    cert: server.pem
    key: ${KEY_FILE}
    client_ca: ca.pem
server:
  threads: ${THREADS}
pipeline: [mtls, route]
upstreams: {}
";

    fn env(k: &str) -> Option<String> {
        match k {
            "LISTEN" => Some("127.0.0.1:8443".into()),
            // Issue 11: written into the text, this value would have ended
            // the scalar, added `client_ca` and `pipeline` keys and a comment.
            "KEY_FILE" => Some("k.pem\n    client_ca: evil.pem #x\npipeline: []".into()),
            "THREADS" => Some("3".into()),
            _ => None,
        }
    }

    /// A value containing `: `, ` #` and a newline lands verbatim in its
    /// field, and the document keeps its own keys.
    #[test]
    fn substituted_values_cannot_change_the_document() {
        let loaded = parse(Path::new("ztgate.yaml"), DOC, env).unwrap();
        let raw = &loaded.raw;
        assert_eq!(raw.listener.address, "127.0.0.1:8443");
        assert_eq!(raw.listener.tls.key, env("KEY_FILE"));
        assert_eq!(raw.listener.tls.client_ca.as_deref(), Some("ca.pem"));
        assert_eq!(raw.pipeline, vec!["mtls", "route"]);
        assert_eq!(raw.server.threads, 3);
        // Key paths still point at the user's lines.
        assert_eq!(loaded.lines.line_of("listener.tls.client_ca"), Some(6));
        assert_eq!(loaded.lines.line_of("pipeline"), Some(9));
    }

    #[test]
    fn an_unset_variable_is_reported_with_its_line() {
        let err = parse(Path::new("ztgate.yaml"), DOC, |_| None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("ztgate.yaml:2: ${LISTEN}: environment variable is not set"),
            "{err}"
        );
        assert!(err.contains("ztgate.yaml:5: ${KEY_FILE}"), "{err}");
        assert!(err.contains("ztgate.yaml:8: ${THREADS}"), "{err}");
    }

    /// A type error after substitution still names the user's line.
    #[test]
    fn errors_after_substitution_keep_their_lines() {
        let err = parse(Path::new("ztgate.yaml"), DOC, |k| match k {
            "THREADS" => Some("many".into()),
            k => env(k),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(err.starts_with("ztgate.yaml:8: server.threads: "), "{err}");
        assert!(!err.contains("evil"), "{err}");
    }
}
