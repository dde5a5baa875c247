#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `ztgate demo` is the first thing a newcomer runs: it must finish with
//! every outcome as expected.

use std::process::Command;

#[test]
fn demo_runs_and_every_outcome_is_as_expected() {
    let out = Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .arg("demo")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("every outcome as expected"), "{text}");
    assert!(!text.contains('✘'), "{text}");
}
