#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `ztgate check`: every problem of a broken config, each with its line.

use std::path::PathBuf;
use std::process::Command;

use ztgate_testkit::pki::Ca;

fn ztgate() -> Command {
    Command::new(PathBuf::from(env!("CARGO_BIN_EXE_ztgate")))
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ztgate-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const GOOD: &str = r#"listener:
  address: 127.0.0.1:8443
  tls:
    cert: server.pem
    key: server-key.pem
    client_ca: ca.pem
pipeline: [sanitize, mtls, route]
routes:
  - name: orders
    match: { grpc: "orders.v1.Orders" }
    select: [{ upstream: orders }]
upstreams:
  orders:
    backends: ["127.0.0.1:50051"]
"#;

fn pki(d: &std::path::Path) {
    let ca = Ca::new("acme.test").unwrap();
    ca.write(d, "ca").unwrap();
    ca.server().unwrap().write(d, "server").unwrap();
    // A key that belongs to another certificate.
    ca.server().unwrap().write(d, "other").unwrap();
}

fn check(d: &std::path::Path, yaml: &str) -> (bool, String) {
    let f = d.join("ztgate.yaml");
    std::fs::write(&f, yaml).unwrap();
    let out = ztgate().arg("check").arg("-c").arg(&f).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn good_config_passes() {
    let d = dir("good");
    pki(&d);
    let (ok, out) = check(&d, GOOD);
    assert!(ok, "{out}");
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn example_config_parses() {
    // The commented example documents every key; it must at least parse
    // (its files do not exist here, so only file problems are allowed).
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/ztgate.example.yaml");
    let out = ztgate()
        .arg("check")
        .arg("-c")
        .arg(example)
        .env("ZTGATE_DEVICE_SECRET", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.is_empty(),
        "its files do not exist, so check must say so"
    );
    for line in text.lines() {
        assert!(line.contains("cannot read"), "unexpected problem: {line}");
        assert!(
            line.contains("ztgate.example.yaml:"),
            "every problem has its line: {line}"
        );
    }
}

#[test]
fn unknown_key_is_reported_with_its_line() {
    let d = dir("unknown");
    pki(&d);
    let yaml = GOOD.replace(
        "    client_ca: ca.pem\n",
        "    client_ca: ca.pem\n    clientca: typo.pem\n",
    );
    let (ok, out) = check(&d, &yaml);
    assert!(!ok);
    let f = d.join("ztgate.yaml");
    assert!(
        out.contains(&format!("{}:7: listener.tls", f.display())),
        "{out}"
    );
    assert!(out.contains("unknown field `clientca`"), "{out}");
}

#[test]
fn every_semantic_problem_is_listed_with_file_line_and_key() {
    let d = dir("broken");
    pki(&d);
    let yaml = GOOD
        .replace("cert: server.pem", "cert: missing.pem")
        .replace("upstream: orders }", "upstream: nowhere }")
        .replace(
            "pipeline: [sanitize, mtls, route]",
            "pipeline: [sanitize, mtls, route, magic]",
        );
    let (ok, out) = check(&d, &yaml);
    assert!(!ok, "{out}");
    let f = d.join("ztgate.yaml").display().to_string();
    assert!(
        out.contains(&format!("{f}:4: listener.tls.cert: cannot read")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{f}:7: pipeline[3]: unknown filter `magic`")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{f}:11: routes[0].select[0].upstream")),
        "{out}"
    );
    assert!(out.contains("nowhere"), "{out}");
    assert!(out.lines().count() >= 3, "{out}");
}

#[test]
fn key_that_does_not_match_the_certificate() {
    let d = dir("mismatch");
    pki(&d);
    let yaml = GOOD.replace("key: server-key.pem", "key: other-key.pem");
    let (ok, out) = check(&d, &yaml);
    assert!(!ok);
    assert!(out.contains(":5: listener.tls.key: private key"), "{out}");
    assert!(out.contains("does not match"), "{out}");
}

#[test]
fn unset_environment_variable_is_named() {
    let d = dir("env");
    pki(&d);
    let yaml = GOOD.replace("127.0.0.1:50051", "${ZTGATE_TEST_SURELY_UNSET}");
    let (ok, out) = check(&d, &yaml);
    assert!(!ok);
    assert!(out.contains(":14: ${ZTGATE_TEST_SURELY_UNSET}"), "{out}");
}

/// Issue 15: a bad trust bundle is named by its trust domain and line; a
/// config with neither `client_ca` nor `trust_bundles` is refused; bundles
/// alone (no `client_ca`) are enough.
#[test]
fn trust_bundles_are_checked_by_key_and_line() {
    let d = dir("bundles");
    pki(&d);
    std::fs::write(d.join("garbage.pem"), "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    let without_ca = GOOD.replace("    client_ca: ca.pem\n", "");
    let with = |bundles: &str| {
        without_ca.replace(
            "pipeline: [sanitize, mtls, route]\n",
            &format!("pipeline: [sanitize, mtls, route]\nmtls:\n  trust_bundles:\n{bundles}"),
        )
    };
    let (ok, out) = check(&d, &with("    acme.test: ca.pem\n"));
    assert!(ok, "{out}");
    let (ok, out) = check(
        &d,
        &with("    acme.test: ca.pem\n    partner.test: garbage.pem\n    Bad_Domain: ca.pem\n"),
    );
    assert!(!ok);
    assert!(
        out.contains(":10: mtls.trust_bundles.partner.test: "),
        "{out}"
    );
    assert!(out.contains("garbage.pem"), "{out}");
    assert!(
        out.contains(":11: mtls.trust_bundles.Bad_Domain: ")
            && out.contains("not a trust domain name"),
        "{out}"
    );
    let (ok, out) = check(&d, &without_ca);
    assert!(!ok);
    assert!(
        out.contains("listener.tls.client_ca: is required unless mtls.trust_bundles"),
        "{out}"
    );
}
