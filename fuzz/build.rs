//! Compiles the pure part of `gateway/src/proxy_protocol.rs` into this crate.
//!
//! The gateway is a binary crate, so its PROXY protocol parser and reader
//! (`parse`, `read_header`) cannot be called from here. Until they move to
//! a library target, this script copies the file up to the Pingora hook
//! (`// === the listener hook ===`: `parse`, `parse_v1`, `parse_v2`,
//! `v2_header`, `read_header`, `fill` and their types, which need only std,
//! `ppp`, `thiserror` and `tokio`) and drops the `use` lines of what it
//! leaves out. The code fuzzed is the gateway's own text, not a copy that
//! could drift. If the marker is gone, the `proxy_protocol` target refuses
//! to build (see `src/proxy_protocol.rs`) while the others still do.

use std::path::Path;

const SOURCE: &str = "../gateway/src/proxy_protocol.rs";
const MARKER: &str = "// === the listener hook ===";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(ztgate_proxy_protocol)");
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("proxy_protocol.rs");
    let text = match std::fs::read_to_string(SOURCE) {
        Ok(t) => t,
        Err(e) => {
            println!("cargo::warning=cannot read {SOURCE}: {e}; proxy_protocol target disabled");
            return;
        }
    };
    let Some((pure, _)) = text.split_once(MARKER) else {
        println!("cargo::warning={SOURCE} has no `{MARKER}` line; proxy_protocol target disabled");
        return;
    };
    let dropped = [
        "pingora",
        "crate::",
        "async_trait",
        "AsRawFd",
        "std::sync::Arc",
    ];
    let kept: String = pure
        .lines()
        // Inner doc comments are not allowed in an `include!`d module body.
        .filter(|l| !l.starts_with("//!"))
        .filter(|l| !(l.starts_with("use ") && dropped.iter().any(|d| l.contains(d))))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&out, kept).expect("write OUT_DIR/proxy_protocol.rs");
    println!("cargo::rustc-cfg=ztgate_proxy_protocol");
}
