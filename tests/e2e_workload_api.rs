#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Issue 15: the SPIFFE Workload API as the listener's identity and client
//! trust. A real gateway process, with no certificate file at all, reads a
//! Workload API server (the test kit's, over a Unix socket, the standard
//! `workload.proto`) as it would a SPIRE agent's.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{eventually, metric_of, workdir};
use ztgate_testkit::backend::Backend;
use ztgate_testkit::client::{self, Target};
use ztgate_testkit::harness::{free_port, GatewayProcess, Until};
use ztgate_testkit::pki::{Ca, Issued, LeafSpec};
use ztgate_testkit::proto::Request;
use ztgate_testkit::workload_api::{self as agent, WorkloadApi};

const GW_ID: &str = "spiffe://acme.test/ns/edge/sa/ztgate";
const PARTNER_ID: &str = "spiffe://partner.test/ns/pay/sa/api";

/// Long enough for a loaded machine; every wait ends as soon as it holds.
const WAIT: Duration = Duration::from_secs(20);

/// The gateway's SVID: its SPIFFE ID, plus `localhost` for the clients'
/// hostname check.
fn gateway_svid(ca: &Ca) -> Issued {
    ca.issue(&LeafSpec {
        common_name: "ztgate".into(),
        dns: vec!["localhost".into()],
        uris: vec![GW_ID.into()],
        ..LeafSpec::default()
    })
    .unwrap()
}

/// What the agent serves: the gateway's SVID from `acme` with acme's
/// bundle, and the partner's bundle as a federated one.
fn material(acme: &Ca, partner: &Ca) -> agent::X509svidResponse {
    agent::update(
        vec![agent::svid(GW_ID, &gateway_svid(acme), &[acme])],
        &[("partner.test", &[partner])],
    )
}

/// A config with no certificate file: identity and trust from the agent.
fn config(listen: u16, admin: u16, socket: &Path, backend: u16) -> String {
    config_with(listen, admin, socket, backend, "")
}

/// [`config`] with `extra` YAML: under `spiffe:` (indented two spaces),
/// then `---` and more under the `orders` upstream.
fn config_with(listen: u16, admin: u16, socket: &Path, backend: u16, extra: &str) -> String {
    let (spiffe_extra, upstream_extra) = extra.split_once("---\n").unwrap_or((extra, ""));
    format!(
        "listener:
  address: 127.0.0.1:{listen}
  tls:
    client_auth: require
admin:
  address: 127.0.0.1:{admin}
server:
  threads: 2
  grace_period: 1s
  shutdown_timeout: 1s
  pid_file: ztgate.pid
  upgrade_sock: upgrade.sock
spiffe:
  workload_api: unix://{}
{spiffe_extra}pipeline: [sanitize, mtls, route]
mtls:
  trust_domains: [acme.test, partner.test]
  allowed_ids: [\"spiffe://acme.test/ns/shop/**\", \"spiffe://partner.test/**\"]
routes:
  - name: orders
    match: {{ grpc: \"orders.v1.Orders\" }}
    select: [{{ upstream: orders }}]
upstreams:
  orders:
    backends: [\"127.0.0.1:{backend}\"]
{upstream_extra}",
        socket.display()
    )
}

fn start(dir: &Path, socket: &Path, backend: &Backend, until: Until) -> GatewayProcess {
    start_with(dir, socket, backend, until, "")
}

fn start_with(
    dir: &Path,
    socket: &Path,
    backend: &Backend,
    until: Until,
    extra: &str,
) -> GatewayProcess {
    start_edited(dir, socket, backend, until, extra, |yaml| yaml)
}

/// [`start_with`], the config text passed through `edit` first.
fn start_edited(
    dir: &Path,
    socket: &Path,
    backend: &Backend,
    until: Until,
    extra: &str,
    edit: impl Fn(String) -> String,
) -> GatewayProcess {
    let (listen, admin) = (free_port().unwrap(), free_port().unwrap());
    let yaml = edit(config_with(
        listen,
        admin,
        socket,
        backend.addr.port(),
        extra,
    ));
    support::start_gateway(dir, &yaml, listen, admin, until)
}

/// A client of `gw` that trusts `server_ca` and presents `who`.
fn as_(gw: &GatewayProcess, server_ca: &Ca, who: &Issued) -> Target {
    Target::tls(gw.url(), server_ca.cert_pem()).with_identity(&who.cert_pem, &who.key_pem)
}

/// `ztgate_workload_api_connected` (a gauge without labels).
fn connected(gw: &GatewayProcess) -> f64 {
    let (_, text) = gw.admin_get("/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ztgate_workload_api_connected "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

/// Whether one call gets through (handshake, then the backend's answer).
async fn passes(t: &Target) -> bool {
    match client::connect(t).await {
        Err(_) => false,
        Ok(ch) => client::orders(ch).get(Request::default()).await.is_ok(),
    }
}

/// Rotation without reload, open connections untouched, an outage served
/// from the last material, federation bound per trust domain, a reload that
/// keeps the stream.
// Several threads: the agent is served by this test's runtime while the
// gateway is started and probed with blocking calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_api_is_the_listeners_identity_and_trust() {
    let dir = workdir("workload-api");
    let socket = dir.join("agent.sock");
    let (acme, partner) = (
        Ca::new("acme.test").unwrap(),
        Ca::new("partner.test").unwrap(),
    );
    let api = WorkloadApi::start(&socket).await.unwrap();
    api.push(material(&acme, &partner));
    let backend = Backend::start("orders").await.unwrap();
    let gw = start(&dir, &socket, &backend, Until::Ready);

    // An SVID of the served bundle gets through; so does one of the
    // federated partner. Each CA minting the other's trust domain, and a
    // trust domain the agent serves no bundle for, are refused.
    let web = acme.svid(support::WEB_ID).unwrap();
    assert!(passes(&as_(&gw, &acme, &web)).await, "{}", gw.log_text());
    assert!(passes(&as_(&gw, &acme, &partner.svid(PARTNER_ID).unwrap())).await);
    assert!(!passes(&as_(&gw, &acme, &partner.svid(support::WEB_ID).unwrap())).await);
    assert!(!passes(&as_(&gw, &acme, &acme.svid(PARTNER_ID).unwrap())).await);
    let stranger = Ca::new("other.test").unwrap();
    assert!(
        !passes(&as_(
            &gw,
            &acme,
            &stranger.svid("spiffe://other.test/ns/x/sa/y").unwrap()
        ))
        .await
    );
    assert!(
        metric_of(
            &gw,
            "ztgate_client_cert_refusals_total",
            &[("reason", "wrong_trust_bundle")]
        ) >= 2.0
    );
    // The gateway asked with the security header (the agent refuses
    // calls without it).
    assert_eq!(api.refused_calls(), 0);
    assert!(api.streams_opened() >= 1);

    // A connection opened before the rotation.
    let open = client::connect(&as_(&gw, &acme, &web)).await.unwrap();
    client::orders(open.clone())
        .get(Request::default())
        .await
        .unwrap();

    // The agent rotates to a new acme CA: new SVID, bundle with only the
    // new CA. New handshakes see the new server certificate and refuse a
    // client of the old CA, without a reload.
    let acme2 = Ca::new("acme.test").unwrap();
    api.push(material(&acme2, &partner));
    let web2 = acme2.svid(support::WEB_ID).unwrap();
    let rotated = eventually(WAIT, async || {
        passes(&as_(&gw, &acme2, &web2)).await
            && !passes(&as_(&gw, &acme, &web2)).await
            && !passes(&as_(&gw, &acme2, &web)).await
    })
    .await;
    assert!(rotated, "the rotation did not apply:\n{}", gw.log_text());
    // The open connection keeps working: its client trusts only the old CA,
    // so a reconnection would have failed.
    client::orders(open.clone())
        .get(Request::default())
        .await
        .expect("the connection opened before the rotation still works");
    assert_eq!(
        metric_of(&gw, "ztgate_config_reloads_total", &[("result", "ok")]),
        0.0,
        "a rotation is not a reload"
    );
    assert!(
        metric_of(
            &gw,
            "ztgate_workload_api_updates_total",
            &[("kind", "x509_svid")]
        ) >= 2.0
    );

    // A broken update (the key of another certificate) is refused; the
    // material in force stays.
    let mut broken = material(&Ca::new("acme.test").unwrap(), &partner);
    broken.svids[0].x509_svid_key = material(&acme2, &partner).svids[0].x509_svid_key.clone();
    api.push(broken);
    assert!(
        support::metric_reaching(
            &gw,
            "ztgate_workload_api_errors_total",
            &[("reason", "malformed")],
            1.0
        )
        .await
            >= 1.0
    );
    assert!(passes(&as_(&gw, &acme2, &web2)).await);
    api.push(material(&acme2, &partner));

    // The agent goes down: the last material keeps serving.
    api.stop().await;
    let down = eventually(WAIT, async || {
        connected(&gw) == 0.0
            && metric_of(
                &gw,
                "ztgate_workload_api_errors_total",
                &[("reason", "connect")],
            ) >= 1.0
    })
    .await;
    assert!(down, "the outage was not noticed:\n{}", gw.log_text());
    assert!(passes(&as_(&gw, &acme2, &web2)).await);
    let (code, _) = gw.admin_get("/readyz").unwrap();
    assert_eq!(code, 200, "an outage after material is still ready");

    // It comes back with a rotation: the gateway reconnects on its own.
    let acme3 = Ca::new("acme.test").unwrap();
    api.push(material(&acme3, &partner));
    api.restart().await.unwrap();
    let web3 = acme3.svid(support::WEB_ID).unwrap();
    let resumed = eventually(WAIT, async || passes(&as_(&gw, &acme3, &web3)).await).await;
    assert!(resumed, "updates did not resume:\n{}", gw.log_text());
    assert_eq!(connected(&gw), 1.0);

    // A reload keeps the stream and its material (it belongs to the agent
    // socket, not to the generation).
    let streams = api.streams_opened();
    support::signal(gw.pid(), "-HUP");
    assert!(
        support::metric_reaching(&gw, "ztgate_config_reloads_total", &[("result", "ok")], 1.0)
            .await
            >= 1.0
    );
    assert!(passes(&as_(&gw, &acme3, &web3)).await);
    assert!(!passes(&as_(&gw, &acme2, &web2)).await);
    assert_eq!(api.streams_opened(), streams, "a reload reconnected");

    // A second replica on the same agent gets the same identity and trust,
    // with `mtls` last in its pipeline: the binding is the handshake's.
    std::fs::create_dir_all(dir.join("b")).unwrap();
    let replica = start_edited(&dir.join("b"), &socket, &backend, Until::Ready, "", |y| {
        assert!(y.contains("pipeline: [sanitize, mtls, route]"));
        y.replace(
            "pipeline: [sanitize, mtls, route]",
            "pipeline: [route, sanitize, mtls]",
        )
    });
    assert!(passes(&as_(&replica, &acme3, &web3)).await);
    assert!(
        !passes(&as_(
            &replica,
            &acme3,
            &partner.svid(support::WEB_ID).unwrap()
        ))
        .await
    );
    assert!(passes(&as_(&replica, &acme3, &partner.svid(PARTNER_ID).unwrap())).await);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Started while the agent is down: not ready, no handshake, until the
/// first material arrives; then serving without a restart.
// Several threads: the agent is served by this test's runtime while the
// gateway is started and probed with blocking calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_agent_delivers() {
    let dir = workdir("workload-api-late");
    let socket = dir.join("agent.sock");
    let backend = Backend::start("orders").await.unwrap();
    let gw = start(&dir, &socket, &backend, Until::Listening);
    let (code, body) = gw.admin_get("/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("SPIFFE Workload API"), "{body}");
    let acme = Ca::new("acme.test").unwrap();
    let partner = Ca::new("partner.test").unwrap();
    let web = acme.svid(support::WEB_ID).unwrap();
    assert!(!passes(&as_(&gw, &acme, &web)).await);

    // The agent starts, with no SVID for us at first: still not ready.
    let api = WorkloadApi::start(&socket).await.unwrap();
    let connected = eventually(WAIT, async || connected(&gw) == 1.0).await;
    assert!(connected, "{}", gw.log_text());
    assert_eq!(gw.admin_get("/readyz").unwrap().0, 503);

    api.push(material(&acme, &partner));
    let ready = eventually(WAIT, async || {
        matches!(gw.admin_get("/readyz"), Ok((200, _)))
    })
    .await;
    assert!(ready, "{}", gw.log_text());
    assert!(passes(&as_(&gw, &acme, &web)).await, "{}", gw.log_text());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ztgate check`: a config whose identity and trust come from the
/// Workload API passes without the agent (check never dials it); one with
/// neither files nor the Workload API is refused at the keys; certificate
/// files beside `use_for: [listener]` are refused as ambiguous.
#[test]
fn check_accepts_the_workload_api_in_place_of_files() {
    let dir = workdir("workload-api-check");
    let socket = dir.join("absent.sock");
    let check = |yaml: &str| {
        let path = dir.join("check.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let good = config(8443, 9901, &socket, 50051);
    let (ok, text) = check(&good);
    assert!(ok, "{text}");

    let neither = good.replace(
        &format!("spiffe:\n  workload_api: unix://{}\n", socket.display()),
        "",
    );
    assert_ne!(neither, good);
    let (ok, text) = check(&neither);
    assert!(!ok);
    assert!(text.contains("listener.tls.cert"), "{text}");
    assert!(text.contains("listener.tls.client_ca"), "{text}");

    let acme = Ca::new("acme.test").unwrap();
    acme.server().unwrap().write(&dir, "server").unwrap();
    let both = good.replace(
        "    client_auth: require\n",
        "    client_auth: require\n    cert: server.pem\n    key: server-key.pem\n",
    );
    let (ok, text) = check(&both);
    assert!(!ok);
    assert!(text.contains("leave it out"), "{text}");

    // Trust alone from the agent: the listener's certificate from files.
    let trust_only = both.replace(
        &format!("  workload_api: unix://{}\n", socket.display()),
        &format!(
            "  workload_api: unix://{}\n  use_for: [trust]\n",
            socket.display()
        ),
    );
    let (ok, text) = check(&trust_only);
    assert!(ok, "{text}");

    let (ok, text) = check(&good.replace("unix://", "tcp://"));
    assert!(!ok);
    assert!(text.contains("spiffe.workload_api"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The example config's commented `spiffe:` block is valid: uncommented,
/// with the listener's certificate files taken out, `check` finds only the
/// example's missing files.
#[test]
fn the_example_spiffe_block_checks() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/ztgate.example.yaml"
    ))
    .unwrap();
    let mut in_block = false;
    let mut lines = Vec::new();
    for line in example.lines() {
        if line == "# spiffe:" {
            in_block = true;
        } else if in_block && !line.starts_with("#   ") {
            in_block = false;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("cert: certs/server.pem")
            || trimmed.starts_with("key: certs/server-key.pem")
        {
            continue;
        }
        lines.push(if in_block { &line[2..] } else { line });
    }
    let yaml = lines.join("\n");
    assert!(
        yaml.contains("\nspiffe:\n  workload_api: unix:///"),
        "{yaml}"
    );
    let dir = workdir("workload-api-example");
    let path = dir.join("ztgate.example.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(["check", "-c"])
        .arg(&path)
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
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `use_for: [upstream]`: the gateway's SVID is the client certificate of
/// an upstream with `tls:` and no `cert`/`key`, checked by a backend that
/// requires a client certificate from the agent's CA. Without `upstream`
/// the same backend refuses the gateway.
// Several threads: the agent and the backend are served by this test's
// runtime while the gateway is started with blocking calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svid_is_the_upstream_client_certificate() {
    let dir = workdir("workload-api-upstream");
    let socket = dir.join("agent.sock");
    let (acme, partner, backend_ca) = (
        Ca::new("acme.test").unwrap(),
        Ca::new("partner.test").unwrap(),
        Ca::new("backend.test").unwrap(),
    );
    backend_ca.write(&dir, "backend-ca").unwrap();
    let server = backend_ca.server().unwrap();
    let backend = Backend::start_tls(
        "orders",
        &server.cert_pem,
        &server.key_pem,
        Some(&acme.cert_pem()),
    )
    .await
    .unwrap();
    let api = WorkloadApi::start(&socket).await.unwrap();
    api.push(material(&acme, &partner));
    let upstream_tls = "    tls: { ca: backend-ca.pem, sni: localhost }\n";
    let web = acme.svid(support::WEB_ID).unwrap();

    let with = start_with(
        &dir,
        &socket,
        &backend,
        Until::Ready,
        &format!("  use_for: [listener, trust, upstream]\n---\n{upstream_tls}"),
    );
    assert!(
        passes(&as_(&with, &acme, &web)).await,
        "{}",
        with.log_text()
    );

    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::copy(dir.join("backend-ca.pem"), dir.join("b/backend-ca.pem")).unwrap();
    let without = start_with(
        &dir.join("b"),
        &socket,
        &backend,
        Until::Ready,
        &format!("---\n{upstream_tls}"),
    );
    assert!(!passes(&as_(&without, &acme, &web)).await);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `listener.tls.crl` with the agent's trust: the CRL's CA comes from the
/// Workload API, so `check` (no agent) accepts the file, and once the
/// bundle has arrived a revoked SVID fails the handshake while a good one
/// of the same CA gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crls_apply_to_the_agents_bundles() {
    let dir = workdir("workload-api-crl");
    let socket = dir.join("agent.sock");
    let (acme, partner) = (
        Ca::new("acme.test").unwrap(),
        Ca::new("partner.test").unwrap(),
    );
    let (web, revoked) = (
        acme.svid(support::WEB_ID).unwrap(),
        acme.svid("spiffe://acme.test/ns/shop/sa/stolen").unwrap(),
    );
    std::fs::write(dir.join("acme.crl"), acme.crl(&[&revoked], 86_400).unwrap()).unwrap();
    let backend = Backend::start("orders").await.unwrap();
    let (listen, admin) = (free_port().unwrap(), free_port().unwrap());
    let yaml = config(listen, admin, &socket, backend.addr.port()).replace(
        "    client_auth: require\n",
        "    client_auth: require\n    crl: [acme.crl]\n",
    );
    std::fs::write(dir.join("check.yaml"), &yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(["check", "-c"])
        .arg(dir.join("check.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let api = WorkloadApi::start(&socket).await.unwrap();
    api.push(material(&acme, &partner));
    let gw = support::start_gateway(&dir, &yaml, listen, admin, Until::Ready);
    assert!(passes(&as_(&gw, &acme, &web)).await, "{}", gw.log_text());
    assert!(!passes(&as_(&gw, &acme, &revoked)).await);
    assert!(
        metric_of(
            &gw,
            "ztgate_client_cert_refusals_total",
            &[("reason", "revoked")]
        ) >= 1.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
