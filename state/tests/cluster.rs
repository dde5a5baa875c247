#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `cluster: true` against a real three-node Redis Cluster (no replicas),
//! built with `redis-cli --cluster create` (package `redis-tools`, which
//! `redis-server` depends on).

use std::process::Command;
use std::time::{Duration, Instant};

use ztgate_filter::{Bind, StateUse};
use ztgate_state::raw::StateSection;
use ztgate_testkit::redis::RedisServer;

#[tokio::test]
async fn operations_reach_the_node_of_each_key() {
    let dir = std::env::temp_dir().join(format!("ztgate-state-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nodes: Vec<RedisServer> = (0..3)
        .map(|i| {
            let conf = dir.join(format!("nodes-{i}.conf"));
            RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str().unwrap(),
            ])
            .unwrap()
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli (package redis-tools; run scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for n in &nodes {
        let mut c = ::redis::Client::open(n.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let start = Instant::now();
        loop {
            let info: String = ::redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{info}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Only the first node as a seed: the rest is discovered.
    let yaml = format!(
        "backend: redis\nredis: {{ url: ['{}'], cluster: true, timeout: 1s }}",
        nodes[0].url()
    );
    let section: StateSection = serde_yaml::from_str(&yaml).unwrap();
    let state = ztgate_state::build(&section, "state").unwrap().unwrap();
    let s = state.store;
    let minute = Duration::from_secs(60);

    // The first call may come before the slot map is known.
    let start = Instant::now();
    while s.insert_once(StateUse::Dpop, "warm", minute).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(15));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 40 keys spread over the 16384 slots, so every node gets some.
    for i in 0..40 {
        let k = format!("dpop:{i}");
        assert!(
            s.insert_once(StateUse::Dpop, &k, minute).await.unwrap(),
            "{k}"
        );
        assert!(
            !s.insert_once(StateUse::Dpop, &k, minute).await.unwrap(),
            "{k}"
        );
        let d = format!("dev:{i}");
        assert_eq!(
            s.bind(StateUse::FirstSeen, &d, "a", minute).await.unwrap(),
            Bind::Bound
        );
        s.rebind(StateUse::FirstSeen, &d, "b").await.unwrap();
        assert_eq!(
            s.bind(StateUse::FirstSeen, &d, "c", minute).await.unwrap(),
            Bind::Existing("b".into())
        );
        let r = format!("rl:{i}");
        assert_eq!(
            s.hit(StateUse::RateLimit, &r, minute).await.unwrap().count,
            1
        );
        assert_eq!(
            s.hit(StateUse::RateLimit, &r, minute).await.unwrap().count,
            2
        );
    }

    // Keys did land on more than one node.
    let mut holding = 0;
    for n in &nodes {
        let mut c = ::redis::Client::open(n.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let size: i64 = ::redis::cmd("DBSIZE").query(&mut c).unwrap();
        if size > 0 {
            holding += 1;
        }
    }
    assert!(holding >= 2, "keys on {holding} node(s)");

    drop(s);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
