#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Changes at run time: SIGHUP and file changes reload atomically, a broken
//! config keeps the old one in service, rotated certificates are used by new
//! handshakes while open connections keep working.

mod support;

use std::time::Duration;

use support::{eventually, signal, Setup};
use ztgate_testkit::client;
use ztgate_testkit::pki::LeafSpec;
use ztgate_testkit::proto::Request;

const TWO_POOLS: &str = "routes:\n  - name: orders\n    match: { grpc: \"orders.v1.Orders\" }\n    select: [{ upstream: first }]\nupstreams:\n  first:\n    backends: [\"127.0.0.1:{B0}\"]\n  second:\n    backends: [\"127.0.0.1:{B1}\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_and_a_broken_config_keeps_the_old_one() {
    let mut setup = Setup::new("reload-hup");
    setup.routing = TWO_POOLS;
    setup.backends = 2;
    let env = setup.start().await;
    let ch = env.web_channel().await;
    let backend = || {
        let ch = ch.clone();
        async move {
            client::orders(ch)
                .get(Request::default())
                .await
                .map(|r| r.into_inner().backend)
        }
    };
    assert_eq!(backend().await.unwrap(), "backend-0");

    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    std::fs::write(
        &env.gw.config,
        text.replace("upstream: first", "upstream: second"),
    )
    .unwrap();
    signal(env.gw.pid(), "-HUP");
    assert!(
        eventually(Duration::from_secs(10), async || backend()
            .await
            .ok()
            .as_deref()
            == Some("backend-1"))
        .await
    );
    assert!(
        env.metric_reaching("ztgate_config_reloads_total", &[("result", "ok")], 1.0)
            .await
            >= 1.0
    );

    // A broken config: reload refused, the running one keeps serving.
    let good = std::fs::read_to_string(&env.gw.config).unwrap();
    std::fs::write(
        &env.gw.config,
        good.replace("upstream: second", "upstream: nowhere"),
    )
    .unwrap();
    signal(env.gw.pid(), "-HUP");
    assert!(
        eventually(Duration::from_secs(10), async || env
            .metric("ztgate_config_reloads_total", &[("result", "error")])
            >= 1.0)
        .await
    );
    assert_eq!(backend().await.unwrap(), "backend-1");
    assert!(env.gw.log_text().contains("nowhere"), "the log says why");
}

fn served_subject(port: u16, dir: &std::path::Path) -> String {
    let text = support::s_client(port, dir);
    text.lines()
        .find(|l| l.trim_start().starts_with("subject="))
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_server_certificate_is_used_by_new_handshakes() {
    let env = Setup::new("reload-cert").start().await;
    env.web.write(&env.dir, "web").unwrap();
    let port = env.gw.listen.port();
    let dir = env.dir.clone();
    let before = tokio::task::spawn_blocking(move || served_subject(port, &dir))
        .await
        .unwrap();
    assert!(before.contains("localhost"), "{before}");

    // An open connection made before the rotation.
    let old = env.web_channel().await;
    client::orders(old.clone())
        .get(Request::default())
        .await
        .unwrap();

    // cert-manager style: a new cert/key pair with another CN, written in place.
    let fresh = env.leaf(LeafSpec {
        common_name: "rotated.localhost".into(),
        dns: vec!["localhost".into()],
        ..LeafSpec::default()
    });
    fresh.write(&env.dir, "server").unwrap();
    let dir = env.dir.clone();
    let rotated = eventually(Duration::from_secs(10), async || {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || served_subject(port, &dir))
            .await
            .unwrap()
            .contains("rotated.localhost")
    })
    .await;
    assert!(rotated, "new handshakes get the new certificate");
    // The old connection still works, and new ones too.
    client::orders(old).get(Request::default()).await.unwrap();
    client::orders(env.web_channel().await)
        .get(Request::default())
        .await
        .unwrap();
}
