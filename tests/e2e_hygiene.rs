#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Request hygiene end to end (PRODUCT.md "Request hygiene", issue 11):
//! identity headers removed whatever the pipeline, non-canonical paths
//! refused before routing, no token or secret in any log line at `trace`,
//! and a backend outage counted as an error rather than a denial.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{eventually, Env, Setup, EDGE, WEB_ID};
use ztgate_testkit::client;
use ztgate_testkit::dpop::DpopKey;
use ztgate_testkit::idp::Idp;
use ztgate_testkit::proto::Request;

/// Every audit line of `file` that is valid JSON.
fn audit_lines(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_are_stripped_without_sanitize_in_the_pipeline() {
    let mut setup = Setup::new("hygiene-headers");
    // No `sanitize`: the gateway strips the reserved headers by itself.
    setup.policy = "pipeline: [mtls, route]\nmtls:\n  trust_domains: [acme.test]\n";
    let env = setup.start().await;
    let mut c = client::orders(env.web_channel().await);
    let mut req = tonic::Request::new(Request::default());
    for (k, v) in [
        ("x-device-fingerprint", "forged"),
        ("x-ztgate-geo-country", "US"),
        ("x-ztgate-subject", "root"),
        ("x-ztgate-scopes", "orders:admin"),
        ("x-ztgate-assertion", "forged.jwt.value"),
        ("x-ztgate-not-yet-invented", "x"),
        ("x-ztgate-spiffe-id", "spiffe://acme.test/ns/admin/sa/root"),
        (
            "x-forwarded-client-cert",
            "Hash=00;URI=spiffe://acme.test/ns/admin/sa/root",
        ),
        ("x-request-id", "hygiene-1"),
    ] {
        req.metadata_mut().insert(k, v.parse().unwrap());
    }
    let md = c.get(req).await.unwrap().into_inner().metadata;
    for forged in [
        "x-device-fingerprint",
        "x-ztgate-geo-country",
        "x-ztgate-subject",
        "x-ztgate-scopes",
        "x-ztgate-assertion",
        "x-ztgate-not-yet-invented",
    ] {
        assert!(
            !md.contains_key(forged),
            "{forged} reached the backend: {md:?}"
        );
    }
    // What `mtls` asserts replaces the client's copy.
    assert_eq!(
        md.get("x-ztgate-spiffe-id").map(String::as_str),
        Some(WEB_ID)
    );
    let xfcc = md.get("x-forwarded-client-cert").unwrap();
    assert!(!xfcc.contains("admin"), "{xfcc}");
    assert!(xfcc.contains(&format!("URI={WEB_ID}")), "{xfcc}");
    // Other headers pass.
    assert_eq!(
        md.get("x-request-id").map(String::as_str),
        Some("hygiene-1")
    );
}

/// One request with curl to `path` exactly as written (`--path-as-is`: no
/// dot-segment squashing), as a gRPC call or a plain GET. Returns the
/// response head and body as curl prints them with `-i`.
async fn curl_path(env: &Env, path: &str, grpc: bool) -> String {
    let (cert, key) = env.web.write(&env.dir, "curl-hygiene").unwrap();
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-i", "--http2", "--path-as-is", "--cacert"])
        .arg(env.dir.join("ca.pem"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key);
    if grpc {
        cmd.args([
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--data-binary",
            "",
        ]);
    }
    cmd.arg(format!("{}{path}", env.gw.url()));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_canonical_paths_are_refused_before_routing() {
    let mut setup = Setup::new("hygiene-paths");
    // A glob route: before the fix, both attack paths matched it.
    setup.routing = "routes:\n  - name: orders\n    match: { grpc: \"orders.v1.Orders/*\" }\n    select: [{ upstream: orders }]\nupstreams:\n  orders:\n    backends: [\"127.0.0.1:{B0}\"]\n";
    let env = setup.start().await;

    for path in [
        "/orders.v1.Orders/..%2Fadmin.v1.Admin%2FDelete",
        "/orders.v1.Orders/Get?/../x",
        "/orders.v1.Orders/../admin.v1.Admin/Delete",
        "/orders.v1.Orders//Get",
    ] {
        let out = curl_path(&env, path, true).await;
        assert!(out.starts_with("http/2 200"), "{path}: {out}");
        assert!(out.contains("grpc-status: 12"), "{path}: {out}");
        assert!(
            out.contains("grpc-message: path_not_canonical"),
            "{path}: {out}"
        );
    }
    // A non-gRPC caller gets the HTTP equivalent.
    let out = curl_path(&env, "/orders.v1.Orders/Get?x=1", false).await;
    assert!(out.starts_with("http/2 404"), "{out}");
    assert!(out.contains("\"reason\":\"path_not_canonical\""), "{out}");

    // Nothing was routed; the same route still serves a canonical call.
    assert_eq!(
        env.metric_reaching(
            "ztgate_requests_total",
            &[
                ("decision", "deny"),
                ("reason", "path_not_canonical"),
                ("grpc_status", "12")
            ],
            5.0
        )
        .await,
        5.0
    );
    assert_eq!(
        env.metric("ztgate_requests_total", &[("decision", "allow")]),
        0.0
    );
    let r = client::orders(env.web_channel().await)
        .get(Request::default())
        .await
        .unwrap();
    assert_eq!(r.into_inner().backend, "backend-0");
}

const DEVICE_SECRET: &str = "hygiene-device-secret-0123456789abcdefXYZ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_proof_or_secret_in_any_log_line_at_trace() {
    let idp = Idp::start().await.unwrap();
    let policy = format!(
        "log:\n  level: trace\naudit:\n  output: audit.log\npipeline: [mtls, jwt, device, route]
mtls:
  trust_domains: [acme.test]
jwt:
  issuers:
    - issuer: {}
      discovery: true
      allow_insecure_http: true
      audiences: [orders]
      algorithms: [ES256]
      dpop: allow
      forward_token: true
device:
  secret: {DEVICE_SECRET}
  signals: [sec_ch_ua]
",
        idp.issuer
    );
    let mut setup = Setup::new("hygiene-logs");
    setup.policy = &policy;
    let env = setup.start().await;
    let ch = env.edge_channel_to(&env.gw).await;
    let mut c = client::orders(ch);

    // A forwarded bearer token.
    let bearer = idp
        .token("alice", "orders:read", "orders", 300, serde_json::json!({}))
        .unwrap();
    let mut r = tonic::Request::new(Request::default());
    r.metadata_mut()
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    r.metadata_mut()
        .insert("sec-ch-ua", "hygiene".parse().unwrap());
    let md = c.get(r).await.unwrap().into_inner().metadata;
    // It did reach the upstream request (so Pingora had it in hand).
    assert_eq!(
        md.get("authorization").map(String::as_str),
        Some(format!("Bearer {bearer}").as_str())
    );

    // A DPoP-bound token and its proof.
    let key = DpopKey::generate().unwrap();
    let bound = idp
        .token(
            "dora",
            "orders:read",
            "orders",
            300,
            serde_json::json!({"cnf": {"jkt": key.thumbprint()}}),
        )
        .unwrap();
    let proof = key
        .proof(&format!("{EDGE}/orders.v1.Orders/Get"), &bound)
        .unwrap();
    let mut r = tonic::Request::new(Request::default());
    r.metadata_mut()
        .insert("authorization", format!("DPoP {bound}").parse().unwrap());
    r.metadata_mut().insert("dpop", proof.parse().unwrap());
    r.metadata_mut()
        .insert("sec-ch-ua", "hygiene".parse().unwrap());
    c.get(r).await.unwrap();

    // A refused token is not logged either.
    let expired = idp
        .token("eve", "orders:read", "orders", -120, serde_json::json!({}))
        .unwrap();
    let mut r = tonic::Request::new(Request::default());
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {expired}").parse().unwrap(),
    );
    let err = c.get(r).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let audit = env.dir.join("audit.log");
    assert!(
        eventually(Duration::from_secs(5), async || audit_lines(&audit).len()
            >= 3)
        .await,
        "audit lines: {:?}",
        audit_lines(&audit)
    );
    // The log is at its most verbose for ztgate's own targets.
    let log = env.gw.log_text();
    assert!(log.contains("request done"), "not at debug level:\n{log}");
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    // Each token's signature part is enough to find it, whole or cut.
    let sig = |t: &str| t.rsplit('.').next().unwrap().to_owned();
    for (what, secret) in [
        ("bearer token", sig(&bearer)),
        ("DPoP-bound token", sig(&bound)),
        ("DPoP proof", sig(&proof)),
        ("expired token", sig(&expired)),
        ("device secret", DEVICE_SECRET.to_owned()),
    ] {
        for (file, text) in [("gateway log", &log), ("audit log", &audit_text)] {
            let hit = text.lines().find(|l| l.contains(&secret));
            assert!(hit.is_none(), "{what} in the {file}: {hit:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_outage_is_an_error_not_a_denial() {
    let mut setup = Setup::new("hygiene-outage");
    setup.policy =
        "pipeline: [mtls, route]\nmtls:\n  trust_domains: [acme.test]\naudit:\n  output: audit.log\n";
    // The pool's only backend is down; one failed connect ejects it.
    setup.routing = "routes:\n  - name: orders\n    match: { grpc: \"orders.v1.Orders\" }\n    select: [{ upstream: orders }]\nupstreams:\n  orders:\n    backends: [\"127.0.0.1:{DOWN}\"]\n    connect_timeout: 300ms\n    passive: { failures: 1, ejection: 1m }\n";
    setup.backends = 0;
    let env = setup.start().await;
    let mut c = client::orders(env.web_channel().await);
    let mut last = String::new();
    let outage = eventually(Duration::from_secs(10), async || {
        let err = c.get(Request::default()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
        last = err.message().to_owned();
        last.starts_with("no_healthy_backend")
    })
    .await;
    assert!(outage, "never no_healthy_backend: {last}");

    assert!(
        env.metric_reaching(
            "ztgate_requests_total",
            &[
                ("decision", "error"),
                ("reason", "no_healthy_backend"),
                ("grpc_status", "14")
            ],
            1.0
        )
        .await
            >= 1.0
    );
    assert_eq!(
        env.metric("ztgate_requests_total", &[("decision", "deny")]),
        0.0
    );
    let audit = env.dir.join("audit.log");
    let line = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .find(|l| l["reason"] == "no_healthy_backend")
            .cloned()
    };
    assert!(
        eventually(Duration::from_secs(5), async || line(&audit_lines(&audit))
            .is_some())
        .await
    );
    let l = line(&audit_lines(&audit)).unwrap();
    assert_eq!(l["decision"], "error", "{l}");
    assert_eq!(l["status"], "14", "{l}");
    assert_eq!(l["upstream"], "orders", "{l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_are_counted_not_logged_as_errors() {
    let env = Setup::new("hygiene-probes").start().await;
    // What a load balancer's TCP health check does: connect, close.
    for _ in 0..5 {
        drop(std::net::TcpStream::connect(env.gw.listen).unwrap());
    }
    let counted = eventually(Duration::from_secs(10), async || {
        env.metric(
            "ztgate_downstream_handshake_failures_total",
            &[("stage", "tls")],
        ) >= 5.0
    })
    .await;
    assert!(counted, "every probe is counted");
    let log = env.gw.log_text();
    assert!(
        !log.contains("handshake error"),
        "no ERROR line per probe:\n{log}"
    );
    // A real call still works.
    client::orders(env.web_channel().await)
        .get(Request::default())
        .await
        .unwrap();
}
