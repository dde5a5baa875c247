//! Loading the config file: read, `${VAR}` substitution, YAML parsing with
//! key paths, then the build into runtime state (see [`build`]). Every
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
    let expanded = env::expand(text, env).map_err(|missing| ConfigErrors {
        file: path.display().to_string(),
        problems: missing
            .into_iter()
            .map(|m| Located {
                line: Some(m.line),
                problem: ConfigProblem::new(
                    "${".to_owned() + &m.name + "}",
                    "environment variable is not set (or not a valid name)",
                ),
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
