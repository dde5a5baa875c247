#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `ztgate explain`: the same chain, offline, with every verdict printed.

use std::path::{Path, PathBuf};
use std::process::Command;

use ztgate_testkit::idp::Idp;
use ztgate_testkit::pki::Ca;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ztgate-explain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(issuer: &str) -> String {
    format!(
        r#"listener:
  address: 127.0.0.1:8443
  tls: {{ cert: server.pem, key: server-key.pem, client_ca: ca.pem }}
pipeline: [sanitize, mtls, jwt, route]
mtls:
  trust_domains: [acme.test]
jwt:
  issuers:
    - issuer: {issuer}
      discovery: true
      allow_insecure_http: true
      audiences: [orders]
      algorithms: [ES256]
routes:
  - name: orders
    match: {{ grpc: "orders.v1.Orders/*" }}
    select:
      - {{ scopes: {{ all: [orders:write] }}, upstream: writers }}
      - {{ scopes: {{ any: [orders:read] }}, upstream: readers }}
upstreams:
  writers: {{ backends: ["127.0.0.1:50051"] }}
  readers: {{ backends: ["127.0.0.1:50052", "127.0.0.1:50053"] }}
"#
    )
}

/// Run `ztgate explain` off the test's runtime (the IdP it fetches keys
/// from lives on that runtime).
async fn explain(d: &Path, args: &[&str]) -> (i32, String) {
    let config = d.join("ztgate.yaml");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_ztgate"))
            .arg("explain")
            .arg("-c")
            .arg(config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explains_identity_token_route_and_denials() {
    let idp = Idp::start().await.unwrap();
    let d = dir("main");
    let ca = Ca::new("acme.test").unwrap();
    ca.write(&d, "ca").unwrap();
    ca.server().unwrap().write(&d, "server").unwrap();
    ca.svid("spiffe://acme.test/ns/shop/sa/web")
        .unwrap()
        .write(&d, "web")
        .unwrap();
    ca.svid("spiffe://partner.test/ns/x/sa/y")
        .unwrap()
        .write(&d, "partner")
        .unwrap();
    std::fs::write(d.join("ztgate.yaml"), config(&idp.issuer)).unwrap();
    let reader = idp
        .token("bob", "orders:read", "orders", 300, serde_json::json!({}))
        .unwrap();
    std::fs::write(d.join("reader.jwt"), &reader).unwrap();
    let expired = idp
        .token("dave", "orders:read", "orders", -300, serde_json::json!({}))
        .unwrap();
    std::fs::write(d.join("expired.jwt"), &expired).unwrap();
    let cert = d.join("web.pem");
    let cert = cert.to_str().unwrap();

    // Allowed, routed by scope; run off the test's runtime (the IdP lives on it).
    let (code, out) = explain(
        &d,
        &[
            "--path",
            "/orders.v1.Orders/Get",
            "--cert",
            cert,
            "--token",
            d.join("reader.jwt").to_str().unwrap(),
            "--client-ip",
            "10.1.2.3",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("spiffe://acme.test/ns/shop/sa/web"), "{out}");
    assert!(out.contains("sub=bob scopes=[orders:read]"), "{out}");
    assert!(
        out.contains("route      orders → upstream readers [127.0.0.1:50052, 127.0.0.1:50053]"),
        "{out}"
    );
    assert!(out.contains("x-ztgate-subject: bob"), "{out}");
    assert!(out.contains("ALLOW"), "{out}");
    assert!(!out.contains(&reader), "the token must never be printed");

    // Expired token: denied by jwt, later filters not run; JSON output.
    let (code, out) = explain(
        &d,
        &[
            "--path",
            "/orders.v1.Orders/Get",
            "--cert",
            cert,
            "--token",
            d.join("expired.jwt").to_str().unwrap(),
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 2, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["reason"], "token_expired");
    assert_eq!(v["grpc_status"], "16");
    assert_eq!(v["http_status"], 401);
    assert_eq!(
        v["filters"].as_array().unwrap().len(),
        3,
        "route did not run"
    );

    // Foreign trust domain: mtls denies.
    let (code, out) = explain(
        &d,
        &[
            "--path",
            "/orders.v1.Orders/Get",
            "--cert",
            d.join("partner.pem").to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("DENY trust_domain_not_allowed: grpc-status 7, HTTP 403"),
        "{out}"
    );
}
