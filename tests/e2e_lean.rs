#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The `demo` cargo feature: `ztgate demo` is a command of every build, and
//! a production build (`--no-default-features`, the Dockerfile's) says that
//! it has no demo instead of failing obscurely.
//!
//! The default build's demo itself is `e2e_demo`. This file's other half
//! runs with `cargo test -p ztgate --no-default-features --test e2e_lean`.

use std::process::Command;

fn ztgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_lists_the_demo_with_what_this_build_can_do() {
    let out = ztgate(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("demo "))
        .unwrap_or_else(|| panic!("no demo command in\n{help}"));
    if cfg!(feature = "demo") {
        assert!(line.contains("throw-away PKI"), "{line}");
    } else {
        assert!(line.contains("Not in this build"), "{line}");
    }
}

#[cfg(not(feature = "demo"))]
#[test]
fn demo_without_the_feature_says_so_and_fails() {
    let out = ztgate(&["demo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("built without the `demo` feature"),
        "stderr: {err}"
    );
}
