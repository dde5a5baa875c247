//! The callgrind mode: the proxy runs under `valgrind --tool=callgrind
//! --instr-atstart=no`, and [`Control`] switches instrumentation on for
//! exactly the measured calls of a counted run ([`crate::count`]) and dumps
//! the counts after them. Instructions per call are a deterministic measure
//! (the same to ~0.1% run after run on a busy 2-core box) where CPU time
//! per call drifts by tens of percent, so a change is judged by them.
//!
//! `callgrind_control` talks to the valgrind'd process through `vgdb` and
//! returns once valgrind executed the command (it wakes a process blocked
//! in `epoll_wait` with ptrace), so when the hook returns the switch has
//! happened.

pub mod format;
pub mod group;
pub mod report;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::count::{Hooks, Measured};

/// Why a callgrind command failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` did not confirm ({status}): {output}")]
    Refused {
        command: String,
        status: String,
        output: String,
    },
    #[error("no dump {out}.N appeared after `dump`")]
    NoDump { out: String },
    #[error(transparent)]
    Format(#[from] format::FormatError),
}

/// Switches a valgrind'd process's instrumentation and collects its dumps.
pub struct Control {
    /// `callgrind_control`.
    pub program: PathBuf,
    /// The valgrind'd process.
    pub pid: u32,
    /// The `--callgrind-out-file` given to valgrind; each dump is written
    /// to `<out>.<N>`.
    pub out: Option<PathBuf>,
    /// Calls per round (for instructions per call).
    pub calls: u64,
}

impl Control {
    /// Run `callgrind_control ARGS PID`; it prints `OK.` once valgrind has
    /// executed the command.
    pub fn command(&self, args: &[&str]) -> Result<(), ControlError> {
        let pid = self.pid.to_string();
        let out = Command::new(&self.program)
            .args(args)
            .arg(&pid)
            .output()
            .map_err(|source| ControlError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && text.contains("OK.") {
            return Ok(());
        }
        Err(ControlError::Refused {
            command: format!("{} {} {pid}", self.program.display(), args.join(" ")),
            status: out.status.to_string(),
            output: text.trim().to_owned(),
        })
    }

    /// Dump, then read the new dump's total.
    fn dump(&self) -> Result<Option<Measured>, ControlError> {
        let before = self.out.as_deref().and_then(latest_dump);
        self.command(&["-d"])?;
        let Some(out) = &self.out else {
            return Ok(None);
        };
        // A new number: this dump, not the previous round's.
        let (_, path) = latest_dump(out)
            .filter(|(n, _)| before.as_ref().is_none_or(|(b, _)| n > b))
            .ok_or_else(|| ControlError::NoDump {
                out: out.display().to_string(),
            })?;
        let text = std::fs::read_to_string(&path).map_err(|source| format::FormatError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let total_ir = format::total_ir(&text)?;
        Ok(Some(Measured {
            dump: path.display().to_string(),
            total_ir,
            ir_per_call: total_ir as f64 / self.calls.max(1) as f64,
        }))
    }
}

impl Hooks for Control {
    fn before(&mut self, _round: u32) -> Result<(), String> {
        self.command(&["-z"])
            .and_then(|()| self.command(&["-i", "on"]))
            .map_err(|e| e.to_string())
    }

    fn after(&mut self, _round: u32) -> Result<Option<Measured>, String> {
        self.command(&["-i", "off"])
            .and_then(|()| self.dump())
            .map_err(|e| e.to_string())
    }
}

/// The highest-numbered `<out>.<N>` that exists.
pub fn latest_dump(out: &Path) -> Option<(u32, PathBuf)> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{}.", out.file_name()?.to_string_lossy());
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(&prefix)?.parse::<u32>().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_dump_is_the_highest_number() {
        let dir = std::env::temp_dir().join(format!("ztgate-cg-dumps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let out = dir.join("ztgate-full.out");
        assert_eq!(latest_dump(&out), None);
        for name in [
            "ztgate-full.out",
            "ztgate-full.out.2",
            "ztgate-full.out.10",
            "ztgate-full.out.x",
            "other.out.99",
        ] {
            std::fs::write(dir.join(name), "").unwrap_or_default();
        }
        assert_eq!(
            latest_dump(&out),
            Some((10, dir.join("ztgate-full.out.10")))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let c = Control {
            program: "/nonexistent/callgrind_control".into(),
            pid: 1,
            out: None,
            calls: 1,
        };
        assert!(matches!(
            c.command(&["-z"]),
            Err(ControlError::Spawn { .. })
        ));
    }
}
