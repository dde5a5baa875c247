#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `ztgate demo` is the first thing a newcomer runs: it must finish with
//! every outcome as expected.

use std::process::Command;

/// Run `ztgate demo ARGS…`; it must succeed with every outcome as
/// expected. Its output.
fn demo(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .arg("demo")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("every outcome as expected"), "{text}");
    assert!(!text.contains('✘'), "{text}");
    text
}

#[test]
fn demo_runs_and_every_outcome_is_as_expected() {
    demo(&[]);
}

/// Kills a child process when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 16: `ztgate demo --keep DIR` leaves a setup that `ztgate run`
/// serves, with backends from `ztgate demo backends` and calls from
/// `ztgate demo call`, with no IdP running (its keys are a static file).
#[test]
fn kept_demo_is_a_working_setup() {
    use ztgate_testkit::harness::{GatewayProcess, Until};
    let bin = env!("CARGO_BIN_EXE_ztgate");
    let dir = std::env::temp_dir().join(format!("ztgate-e2e-demo-keep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let text = demo(&["--keep".as_ref(), dir.as_os_str()]);
    assert!(text.contains("kept a working setup"), "{text}");
    for f in [
        "README.md",
        "ztgate.yaml",
        "jwks.json",
        "ca.pem",
        "web.pem",
        "web-key.pem",
        "tokens/writer.jwt",
        "tokens/reader.jwt",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let yaml = std::fs::read_to_string(dir.join("ztgate.yaml")).unwrap();
    assert!(yaml.contains("keys_file: jwks.json"), "{yaml}");
    assert!(
        !yaml.contains("deny:"),
        "the demo's SIGHUP edit is not kept: {yaml}"
    );
    let check = Command::new(bin)
        .args(["check", "-c"])
        .arg(dir.join("ztgate.yaml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // The README's commands: backends, the gateway, calls.
    let _backends = Child(
        Command::new(bin)
            .args(["demo", "backends", "-c"])
            .arg(dir.join("ztgate.yaml"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let addr = |v: &serde_yaml::Value| v.as_str().unwrap().parse().unwrap();
    let _gw = GatewayProcess::start(
        std::path::Path::new(bin),
        &dir,
        &yaml,
        addr(&doc["listener"]["address"]),
        addr(&doc["admin"]["address"]),
        Until::Ready,
    )
    .unwrap();
    let call = |token: &str, who: &str| {
        let out = Command::new(bin)
            .args(["demo", "call", "-d"])
            .arg(&dir)
            .args(["--as", who, "--token", token])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // The backends may still be binding: the first call waits for them.
    let mut first = call("writer", "web");
    for _ in 0..50 {
        if first.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        first = call("writer", "web");
    }
    assert!(
        first.0 && first.1.starts_with("OK from orders-a"),
        "{first:?}"
    );
    let (ok, text) = call("reader", "web");
    assert!(ok && text.starts_with("OK from orders-b"), "{text}");
    let (ok, text) = call("profile", "web");
    assert!(
        !ok && text.contains("PermissionDenied (scope_missing)"),
        "{text}"
    );
    let (ok, text) = call("writer", "partner");
    assert!(!ok && text.contains("trust_domain_not_allowed"), "{text}");
    let (ok, text) = call("none", "web");
    assert!(
        !ok && text.contains("Unauthenticated (token_missing)"),
        "{text}"
    );
    drop(_gw);
    let _ = std::fs::remove_dir_all(&dir);
}
