#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `deploy/grafana/ztgate.json` queries only what the gateway exports:
//! every metric named in the dashboard's expressions is in a real
//! `/metrics` scrape of a running gateway (mTLS, JWT with a real OIDC
//! provider, routes to a live and a dead upstream) after it has served an
//! allowed and a denied call.

mod support;

use std::collections::BTreeSet;

use support::Setup;
use ztgate_testkit::client;
use ztgate_testkit::idp::Idp;
use ztgate_testkit::proto::Request;

/// Every `ztgate_*` metric name in the dashboard's `expr` fields.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/ztgate.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dash, &mut exprs);
    assert!(
        exprs.len() >= 15,
        "dashboard has {} expressions",
        exprs.len()
    );
    let mut names = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("ztgate_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

/// The metric families of a scrape (`# TYPE name kind`), with the series
/// names a histogram family stands for.
fn scraped(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            out.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    out
}

// Multi-threaded: the IdP serves on this runtime while the harness blocks
// waiting for the gateway to be ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_in_a_real_scrape() {
    let idp = Idp::start().await.unwrap();
    let policy = format!(
        "pipeline: [sanitize, mtls, jwt, route]
mtls:
  trust_domains: [acme.test]
jwt:
  issuers:
    - issuer: {}
      discovery: true
      allow_insecure_http: true
      audiences: [orders]
      algorithms: [ES256]
",
        idp.issuer
    );
    let mut setup = Setup::new("dashboard");
    setup.policy = &policy;
    let env = setup.start().await;
    let ch = env.web_channel().await;
    let token = idp
        .token("alice", "orders:read", "orders", 300, serde_json::json!({}))
        .unwrap();
    let with_token = |token: &str| {
        let mut r = tonic::Request::new(Request::default());
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    // Allowed, and denied (no token).
    client::orders(ch.clone())
        .get(with_token(&token))
        .await
        .unwrap();
    client::orders(ch.clone())
        .get(Request::default())
        .await
        .unwrap_err();
    let (_, text) = env.gw.admin_get("/metrics").unwrap();
    let have = scraped(&text);
    let missing: Vec<String> = dashboard_metrics()
        .into_iter()
        .filter(|m| !have.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the gateway does not export: {missing:?}\nscrape:\n{text}"
    );
}
