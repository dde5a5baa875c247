//! Source files of the `ztgate` binary crate, compiled into this crate
//! unchanged because a binary's items cannot be imported.
//!
//! - `config::{env, lines, raw}`: the `${VAR}` substitution, the key-path →
//!   line index and the raw YAML types. They depend only on std, serde and
//!   yaml-rust2 and the filter crates, so they are included whole with
//!   `#[path]`. `gateway/src/config/mod.rs` (which ties them to the build)
//!   is not: [`crate::config`] repeats its `parse` in a few lines.
//! - `proxy_protocol`: the part before the Pingora hook, cut out by
//!   `build.rs`.
//!
//! Moving these into a library target of the gateway would let the fuzz
//! crate call them like any other crate; nothing else changes.

/// `gateway/src/config/{env,lines,raw}.rs` (declared in `lib.rs`, where
/// `#[path]` is relative to `src/`).
pub mod config {
    pub use crate::gateway_config_env as env;
    pub use crate::gateway_config_lines as lines;
    pub use crate::gateway_config_raw as raw;
}

#[cfg(ztgate_proxy_protocol)]
#[allow(dead_code, unused_imports, clippy::all)]
pub mod proxy_protocol {
    include!(concat!(env!("OUT_DIR"), "/proxy_protocol.rs"));
}
