//! Fuzz harnesses for ztgate's parsers: one module per target, each with a
//! `run(&[u8])` that feeds arbitrary bytes to real project code and checks
//! what must hold for any input (no panic, no hang, bounded allocation, and
//! the parser's own stated invariants: every-prefix answers, round trips,
//! agreement with a simple reference).
//!
//! The targets in `fuzz_targets/` only call `run` (linkerd's 3-line
//! targets), so `cargo test` here replays every seed and regression input
//! on stable Rust with no fuzzing flags (see `tests` below).
//!
//! Code of the `ztgate` binary crate that is not reachable from a library
//! is compiled in from its own source files (see [`gateway`]).

pub mod client_hello;
pub mod config;
pub mod gateway;
pub mod jwt;
pub mod proxy_protocol;
pub mod routes;
pub mod xfcc;

// The gateway's config files, compiled here as they are (see `gateway`).
#[doc(hidden)]
#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../gateway/src/config/env.rs"]
pub mod gateway_config_env;
#[doc(hidden)]
#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../gateway/src/config/lines.rs"]
pub mod gateway_config_lines;
#[doc(hidden)]
#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../gateway/src/config/raw.rs"]
pub mod gateway_config_raw;
#[doc(hidden)]
#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../gateway/src/trace/config.rs"]
pub mod gateway_trace_config;
/// `crate::trace::TracingSection`, as `gateway_config_raw` names it.
#[doc(hidden)]
pub mod trace {
    pub use crate::gateway_trace_config::TracingSection;
}

/// Deterministic split of an input into a selector byte and the rest, so
/// one target can drive several entry points from one corpus.
pub fn mode(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(m, rest)| (*m, rest))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn inputs(target: &str) -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        if let Ok(dir) = std::fs::read_dir(root.join("corpus").join(target)) {
            out.extend(dir.flatten().map(|e| e.path()));
        }
        if let Ok(dir) = std::fs::read_dir(root.join("regressions")) {
            out.extend(dir.flatten().map(|e| e.path()).filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{target}-")))
            }));
        }
        out.sort();
        out
    }

    fn regression(name: &str) -> Vec<u8> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::read(root.join("regressions").join(name)).unwrap()
    }

    fn replay(target: &str, run: fn(&[u8])) {
        let files = inputs(target);
        assert!(!files.is_empty(), "no seeds for {target}");
        for f in files {
            let data = std::fs::read(&f).unwrap();
            eprintln!("{target}: {}", f.display());
            run(&data);
        }
    }

    #[test]
    fn client_hello() {
        replay("client_hello", super::client_hello::run);
    }

    #[test]
    fn proxy_protocol() {
        replay("proxy_protocol", super::proxy_protocol::run);
    }

    #[test]
    fn jwt() {
        replay("jwt", super::jwt::run);
    }

    #[test]
    fn xfcc() {
        replay("xfcc", super::xfcc::run);
    }

    #[test]
    fn config() {
        replay("config", super::config::run_strict);
    }

    #[test]
    fn routes() {
        replay("routes", super::routes::run);
    }
}
