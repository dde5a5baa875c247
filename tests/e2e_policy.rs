#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! The `policy` filter through the real gateway: real client
//! certificates, tokens from a real OIDC provider, a Rego policy and a
//! data file on disk. Allowed; refused for each condition with the
//! policy's reason; a data file changed on disk decides anew without a
//! restart; a policy that does not compile is refused by `check` (with its
//! file and line) and by a reload (the old one keeps serving).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{eventually, Setup};
use ztgate_testkit::client;
use ztgate_testkit::idp::Idp;
use ztgate_testkit::proto::Request;

const WEB: &str = support::WEB_ID;
const BATCH: &str = "spiffe://acme.test/ns/shop/sa/batch";

/// One rule per condition, first failing condition wins.
const POLICY: &str = r#"package ztgate
import rego.v1

default decision := false

decision := {"allow": false, "reason": "workload_not_allowed"} if {
    input.spiffe_id != "spiffe://acme.test/ns/shop/sa/web"
} else := {"allow": false, "reason": "needs_orders_read"} if {
    not "orders:read" in input.scopes
} else := {"allow": false, "reason": "subject_blocked"} if {
    input.subject in data.blocked
} else := {"allow": true} if {
    input.service == "orders.v1.Orders"
    input.method == "Get"
    input.route == "orders"
    input.upstream == "orders"
    input.headers["x-tenant"] == input.claims.tenant
}
"#;

/// Policy files live outside the gateway's folder (which the harness
/// makes afresh), referred to by absolute path.
fn files_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ztgate-e2e-{name}-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pipeline(issuer: &str, files: &Path) -> String {
    format!(
        "pipeline: [sanitize, mtls, jwt, route, policy]\nmtls:\n  trust_domains: [acme.test]\n  allowed_ids: [\"spiffe://acme.test/ns/shop/**\"]\njwt:\n  issuers:\n    - issuer: {issuer}\n      discovery: true\n      allow_insecure_http: true\n      audiences: [orders]\n      algorithms: [ES256]\npolicy:\n  rego: [{rego}]\n  data: [{data}]\n  input_claims: [tenant]\n  input_headers: [x-tenant]\n",
        rego = files.join("orders.rego").display(),
        data = files.join("data.json").display(),
    )
}

fn call(token: &str, tenant: &str) -> tonic::Request<Request> {
    let mut r = tonic::Request::new(Request::default());
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r.metadata_mut().insert("x-tenant", tenant.parse().unwrap());
    r
}

/// A call that must be refused 7 PERMISSION_DENIED: its reason code (the
/// start of `grpc-message`).
async fn denied(mut c: Orders, req: tonic::Request<Request>) -> String {
    let e = c.get(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    e.message().split(':').next().unwrap_or("").to_owned()
}

type Orders = client::OrdersClient<tonic::transport::Channel>;

/// `ztgate check -c FILE`: (exit code, stdout + stderr).
fn check(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .arg("check")
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rego_decides_reloads_and_refuses_a_broken_policy() {
    let idp = Idp::start().await.unwrap();
    let files = files_dir("policy");
    std::fs::write(files.join("orders.rego"), POLICY).unwrap();
    std::fs::write(files.join("data.json"), r#"{"blocked": ["mallory"]}"#).unwrap();
    let mut setup = Setup::new("policy");
    let policy = pipeline(&idp.issuer, &files);
    setup.policy = &policy;
    let env = setup.start().await;
    let tok = |sub: &str, scope: &str| {
        idp.token(
            sub,
            scope,
            "orders",
            300,
            serde_json::json!({"tenant": "t1"}),
        )
        .unwrap()
    };
    let web = client::orders(env.web_channel().await);

    // Allowed: the right workload, scope, subject, tenant.
    let mut c = web.clone();
    let r = c
        .get(call(&tok("alice", "orders:read"), "t1"))
        .await
        .unwrap();
    assert_eq!(r.into_inner().backend, "backend-0");

    // Each condition failing, with the policy's own reason code.
    let batch = client::orders(env.channel_as(&env.svid(BATCH)).await);
    let alice = tok("alice", "orders:read");
    assert_eq!(
        denied(batch, call(&alice, "t1")).await,
        "workload_not_allowed"
    );
    assert_eq!(
        denied(web.clone(), call(&tok("alice", "profile"), "t1")).await,
        "needs_orders_read"
    );
    let mallory = tok("mallory", "orders:read");
    assert_eq!(
        denied(web.clone(), call(&mallory, "t1")).await,
        "subject_blocked"
    );
    // No rule allows: the default, `false`, is `policy_denied`.
    assert_eq!(
        denied(web.clone(), call(&alice, "t2")).await,
        "policy_denied"
    );
    assert!(
        env.metric_reaching(
            "ztgate_requests_total",
            &[
                ("reason", "subject_blocked"),
                ("decision", "deny"),
                ("grpc_status", "7")
            ],
            1.0
        )
        .await
            >= 1.0
    );
    assert!(
        env.metric_reaching("ztgate_requests_total", &[("reason", "policy_denied")], 1.0)
            .await
            >= 1.0
    );
    assert_ne!(WEB, BATCH);

    // The data file changes on disk: mallory is let in, alice is not, with
    // no restart and no signal.
    std::fs::write(files.join("data.json"), r#"{"blocked": ["alice"]}"#).unwrap();
    let swapped = eventually(Duration::from_secs(15), async || {
        let mut c = web.clone();
        c.get(call(&mallory, "t1")).await.is_ok()
    })
    .await;
    assert!(swapped, "the new data decides without a restart");
    assert_eq!(
        denied(web.clone(), call(&alice, "t1")).await,
        "subject_blocked"
    );

    // A policy that does not compile: `check` names the file and line...
    let good = std::fs::read_to_string(files.join("orders.rego")).unwrap();
    let reloads_ok = env.metric("ztgate_config_reloads_total", &[("result", "error")]);
    std::fs::write(
        files.join("orders.rego"),
        good.replace(
            "default decision := false",
            "default decision := false\n\nbroken := {",
        ),
    )
    .unwrap();
    let (code, out) = check(&env.gw.config);
    assert_eq!(code, 1, "{out}");
    let rego = files.join("orders.rego").display().to_string();
    assert!(out.contains("policy.rego[0]"), "{out}");
    assert!(out.contains(&format!("{rego}:")), "{out}");
    // ... and the reload it triggers is refused: the old policy serves on.
    let refused = eventually(Duration::from_secs(15), async || {
        env.metric("ztgate_config_reloads_total", &[("result", "error")]) > reloads_ok
    })
    .await;
    assert!(refused, "the broken policy was not refused by a reload");
    let mut c = web.clone();
    c.get(call(&mallory, "t1")).await.unwrap();
    assert_eq!(
        denied(web.clone(), call(&alice, "t1")).await,
        "subject_blocked"
    );

    // Fixed again: `check` passes.
    std::fs::write(files.join("orders.rego"), &good).unwrap();
    let (code, out) = check(&env.gw.config);
    assert_eq!(code, 0, "{out}");

    // `explain` shows the input document and what the policy said.
    let (cert, _) = env.web.write(&env.dir, "web-explain").unwrap();
    let token_file = env.dir.join("alice.jwt");
    std::fs::write(&token_file, &alice).unwrap();
    let config = env.gw.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ztgate"))
            .arg("explain")
            .arg("-c")
            .arg(config)
            .args([
                "--path",
                "/orders.v1.Orders/Get",
                "--header",
                "x-tenant: t1",
                "--cert",
            ])
            .arg(cert)
            .arg("--token")
            .arg(token_file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("policy input {"), "{text}");
    assert!(
        text.contains("\"spiffe_id\":\"spiffe://acme.test/ns/shop/sa/web\""),
        "{text}"
    );
    assert!(text.contains("\"claims\":{\"tenant\":\"t1\"}"), "{text}");
    assert!(text.contains("policy said"), "{text}");
    assert!(text.contains("evaluated by the regorus VM"), "{text}");
    assert!(text.contains("subject_blocked"), "{text}");
    let _ = std::fs::remove_dir_all(&files);
}

/// Shadow mode: the policy's denial is recorded, the call goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_records_and_lets_through() {
    let files = files_dir("policy-shadow");
    std::fs::write(
        files.join("deny.rego"),
        "package ztgate\ndecision := {\"allow\": false, \"reason\": \"not_yet\"}\n",
    )
    .unwrap();
    let mut setup = Setup::new("policy-shadow");
    let policy = format!(
        "pipeline: [sanitize, mtls, route, policy]\nmtls:\n  trust_domains: [acme.test]\npolicy:\n  mode: shadow\n  rego: [{}]\n",
        files.join("deny.rego").display()
    );
    setup.policy = &policy;
    let env = setup.start().await;
    let mut c = client::orders(env.web_channel().await);
    c.get(Request::default()).await.unwrap();
    assert!(
        env.metric_reaching(
            "ztgate_requests_total",
            &[("decision", "shadow_deny"), ("reason", "not_yet")],
            1.0
        )
        .await
            >= 1.0
    );
    let _ = std::fs::remove_dir_all(&files);
}

/// `routes[].policy.decision`: the `watch` route is decided by its own
/// rule (only the batch workload may watch), the `orders` route by the
/// section's; the same after a SIGHUP and on a second replica; each rule
/// counted in `ztgate_policy_decisions_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_is_decided_by_its_own_rule() {
    let files = files_dir("policy-route");
    std::fs::write(
        files.join("routes.rego"),
        format!(
            "package ztgate\nimport rego.v1\n\ndecision := true\n\nwatch := true if input.spiffe_id == \"{BATCH}\"\nelse := {{\"allow\": false, \"reason\": \"watch_needs_batch\"}}\n"
        ),
    )
    .unwrap();
    let mut setup = Setup::new("policy-route");
    let policy = format!(
        "pipeline: [sanitize, mtls, route, policy]\nmtls:\n  trust_domains: [acme.test]\npolicy:\n  rego: [{}]\n",
        files.join("routes.rego").display()
    );
    setup.policy = &policy;
    setup.routing = "routes:\n  - name: watch\n    match: { grpc: \"orders.v1.Orders/Watch\" }\n    select: [{ upstream: orders }]\n    policy: { decision: data.ztgate.watch }\n  - name: orders\n    match: { grpc: \"orders.v1.Orders\" }\n    select: [{ upstream: orders }]\nupstreams:\n  orders:\n    backends: [\"127.0.0.1:{B0}\"]\n";
    let env = setup.start().await;

    let replica = env.replica("b");
    env.first_then_reloaded_and_replica(&replica, async |gw, _| {
        let web = client::orders(env.channel_to(gw, &env.web).await);
        let batch = client::orders(env.channel_to(gw, &env.svid(BATCH)).await);
        // The section's rule: anyone may Get.
        web.clone().get(Request::default()).await.unwrap();
        // The route's rule: only the batch workload may Watch.
        let e = web.clone().watch(Request::default()).await.unwrap_err();
        support::assert_denied(&e, tonic::Code::PermissionDenied, "watch_needs_batch", None);
        batch.clone().watch(Request::default()).await.unwrap();
    })
    .await;
    // The Rego file changed on disk: the route's rule now lets the web
    // workload watch too, with no restart and no signal.
    let rego = files.join("routes.rego");
    let text = std::fs::read_to_string(&rego).unwrap();
    std::fs::write(
        &rego,
        text.replace(
            &format!("watch := true if input.spiffe_id == \"{BATCH}\""),
            &format!("watch := true if input.spiffe_id in {{\"{BATCH}\", \"{WEB}\"}}"),
        ),
    )
    .unwrap();
    let web = client::orders(env.web_channel().await);
    let applied = eventually(Duration::from_secs(15), async || {
        web.clone().watch(Request::default()).await.is_ok()
    })
    .await;
    assert!(applied, "the changed rule did not apply");

    let count = |decision: &str, result: &str| {
        env.metric(
            "ztgate_policy_decisions_total",
            &[("decision", decision), ("result", result)],
        )
    };
    assert!(count("data.ztgate.watch", "deny") >= 2.0);
    assert!(count("data.ztgate.watch", "allow") >= 2.0);
    assert!(count("data.ztgate.decision", "allow") >= 2.0);
    assert_eq!(count("data.ztgate.decision", "deny"), 0.0);

    // `check` refuses a route's rule that names nothing, at its key.
    let config = std::fs::read_to_string(&env.gw.config).unwrap();
    let broken = env.dir.join("broken.yaml");
    std::fs::write(
        &broken,
        config.replace("data.ztgate.watch", "data.ztgate.nope"),
    )
    .unwrap();
    let (code, out) = check(&broken);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("routes[0].policy.decision"), "{out}");
    // ... and a route's rule with no `policy` filter to evaluate it, which
    // would otherwise allow what the route meant to restrict.
    let pipeline_end = config.find("pipeline:").unwrap();
    let line_end = pipeline_end + config[pipeline_end..].find('\n').unwrap();
    std::fs::write(
        &broken,
        format!(
            "{}pipeline: [sanitize, mtls, route]{}",
            &config[..pipeline_end],
            &config[line_end..]
        ),
    )
    .unwrap();
    let (code, out) = check(&broken);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("routes[0].policy: a route's policy rule needs `policy`"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&files);
}
