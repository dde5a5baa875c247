#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Security memory across reloads and replicas (PRODUCT.md "Changes at run
//! time", "State across replicas"): a DPoP proof is accepted once, a
//! first-seen device binding holds and a rate-limit window keeps counting
//! after a SIGHUP and on every replica sharing one real `redis-server`; a
//! reload applies while the IdP is down; a Redis outage follows each use's
//! `on_unavailable` without hanging a call, and recovery needs no restart.

mod support;

use std::time::{Duration, Instant};

use support::{eventually, metric_reaching, Env, Setup, EDGE};
use tonic::transport::Channel;
use ztgate_testkit::client;
use ztgate_testkit::dpop::DpopKey;
use ztgate_testkit::idp::Idp;
use ztgate_testkit::proto::Request;
use ztgate_testkit::redis::RedisServer;

const SECRET: &str = "an-example-device-secret-of-40-bytes!!!!";
/// Calls a subject may make per minute in these tests.
const LIMIT: usize = 6;

fn policy(issuer: &str, state: &str) -> String {
    format!(
        "pipeline: [sanitize, mtls, jwt, device, route, ratelimit]
mtls:
  trust_domains: [acme.test]
jwt:
  issuers:
    - issuer: {issuer}
      discovery: true
      allow_insecure_http: true
      audiences: [orders]
      algorithms: [ES256]
      dpop: allow
device:
  secret: {SECRET}
  signals: [sec_ch_ua]
  first_seen: {{ ttl: 10m }}
ratelimit:
  rules:
    - {{ name: per-subject, key: subject, limit: {LIMIT}, interval: 1m }}
{state}"
    )
}

fn redis_state(redis: &RedisServer, on_unavailable: &str) -> String {
    format!(
        "state:\n  backend: redis\n  redis:\n    url: {}\n    timeout: 100ms\n    key_prefix: \"e2e:\"\n  on_unavailable: {{ {on_unavailable} }}\n",
        redis.url()
    )
}

/// One `Orders/Get` as `device` (its `sec-ch-ua`), with a bearer token, or
/// a DPoP-bound token and its proof.
async fn call(
    ch: &Channel,
    token: &str,
    device: &str,
    proof: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut r = tonic::Request::new(Request::default());
    let md = r.metadata_mut();
    let scheme = if proof.is_some() { "DPoP" } else { "Bearer" };
    md.insert(
        "authorization",
        format!("{scheme} {token}").parse().unwrap(),
    );
    md.insert("sec-ch-ua", device.parse().unwrap());
    if let Some(p) = proof {
        md.insert("dpop", p.parse().unwrap());
    }
    client::orders(ch.clone()).get(r).await.map(|_| ())
}

fn htu() -> String {
    format!("{EDGE}/orders.v1.Orders/Get")
}

/// A DPoP-bound token for `sub` and its key.
fn dpop_token(idp: &Idp, sub: &str) -> (String, DpopKey) {
    let key = DpopKey::generate().unwrap();
    let tok = idp
        .token(
            sub,
            "orders:read",
            "orders",
            300,
            serde_json::json!({"cnf": {"jkt": key.thumbprint()}}),
        )
        .unwrap();
    (tok, key)
}

fn bearer_token(idp: &Idp, sub: &str) -> String {
    idp.token(sub, "orders:read", "orders", 300, serde_json::json!({}))
        .unwrap()
}

async fn start(name: &str, idp: &Idp, state: &str) -> Env {
    let mut setup = Setup::new(name);
    let policy = policy(&idp.issuer, state);
    setup.policy = &policy;
    setup.start().await
}

fn denied_with(r: Result<(), tonic::Status>, code: tonic::Code) -> tonic::Status {
    let e = r.expect_err("the call must be refused");
    assert_eq!(e.code(), code, "{}", e.message());
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_replay_memory_bindings_and_windows() {
    let idp = Idp::start().await.unwrap();
    let env = start("state-reload", &idp, "").await;
    let ch = env.edge_channel_to(&env.gw).await;

    let (dtok, dkey) = dpop_token(&idp, "dora");
    let proof = dkey.proof(&htu(), &dtok).unwrap();
    call(&ch, &dtok, "laptop", Some(&proof)).await.unwrap();

    let alice = bearer_token(&idp, "alice");
    call(&ch, &alice, "laptop", None).await.unwrap();

    let busy = bearer_token(&idp, "busy");
    for _ in 0..LIMIT {
        call(&ch, &busy, "laptop", None).await.unwrap();
    }

    // cert-manager touching files, an operator sending SIGHUP: a reload.
    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    std::fs::write(&env.gw.config, format!("{text}# reloaded\n")).unwrap();
    support::sighup_reloaded(&env.gw).await;

    // The proof accepted before the reload is a replay after it.
    denied_with(
        call(&ch, &dtok, "laptop", Some(&proof)).await,
        tonic::Code::Unauthenticated,
    );
    assert!(
        env.metric_reaching("ztgate_requests_total", &[("reason", "dpop_replay")], 1.0)
            .await
            >= 1.0
    );
    // A fresh proof is fine.
    let fresh = dkey.proof(&htu(), &dtok).unwrap();
    call(&ch, &dtok, "laptop", Some(&fresh)).await.unwrap();

    // alice is still bound to the laptop.
    denied_with(
        call(&ch, &alice, "phone", None).await,
        tonic::Code::PermissionDenied,
    );
    call(&ch, &alice, "laptop", None).await.unwrap();

    // busy's window kept counting.
    denied_with(
        call(&ch, &busy, "laptop", None).await,
        tonic::Code::ResourceExhausted,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_while_the_idp_is_down() {
    let idp = Idp::start().await.unwrap();
    let env = start("state-idp-down", &idp, "").await;
    let ch = env.edge_channel_to(&env.gw).await;
    call(&ch, &bearer_token(&idp, "carol"), "laptop", None)
        .await
        .unwrap();

    // The IdP goes away; a second issuer (never reached) is added and the
    // server certificate is rotated, in one reload.
    idp.stop();
    let other = Idp::start().await.unwrap();
    let other_token = bearer_token(&other, "mallory");
    let other_issuer = other.issuer.clone();
    drop(other);
    let text = std::fs::read_to_string(&env.gw.config).unwrap();
    let second = format!(
        "    - issuer: {other_issuer}\n      discovery: true\n      allow_insecure_http: true\n      audiences: [orders]\n      algorithms: [ES256]\n      http_timeout: 500ms\ndevice:"
    );
    std::fs::write(&env.gw.config, text.replacen("device:", &second, 1)).unwrap();
    env.ca.server().unwrap().write(&env.dir, "server").unwrap();
    support::sighup_reloaded(&env.gw).await;

    // The kept keys still verify a new token of the first issuer, on a new
    // connection (which gets the rotated certificate).
    let fresh = env.edge_channel_to(&env.gw).await;
    call(&fresh, &bearer_token(&idp, "carol"), "laptop", None)
        .await
        .unwrap();
    // The new issuer has no keys: an outage, not the caller's fault.
    denied_with(
        call(&fresh, &other_token, "laptop", None).await,
        tonic::Code::Unavailable,
    );
    let (status, body) = env.gw.admin_get("/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&other_issuer), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_replay_memory_bindings_and_limits() {
    let redis = RedisServer::start().unwrap();
    let idp = Idp::start().await.unwrap();
    let env = start("state-replicas", &idp, &redis_state(&redis, "")).await;
    let b = env.replica("b");
    let (to_a, to_b) = (
        env.edge_channel_to(&env.gw).await,
        env.edge_channel_to(&b).await,
    );

    // A proof accepted by A is a replay at B.
    let (dtok, dkey) = dpop_token(&idp, "dora");
    let proof = dkey.proof(&htu(), &dtok).unwrap();
    call(&to_a, &dtok, "laptop", Some(&proof)).await.unwrap();
    denied_with(
        call(&to_b, &dtok, "laptop", Some(&proof)).await,
        tonic::Code::Unauthenticated,
    );
    assert!(
        metric_reaching(
            &b,
            "ztgate_requests_total",
            &[("reason", "dpop_replay")],
            1.0
        )
        .await
            >= 1.0
    );

    // A binding made on A holds on B.
    let alice = bearer_token(&idp, "alice");
    call(&to_a, &alice, "laptop", None).await.unwrap();
    denied_with(
        call(&to_b, &alice, "phone", None).await,
        tonic::Code::PermissionDenied,
    );
    call(&to_b, &alice, "laptop", None).await.unwrap();

    // A limit of LIMIT holds for the fleet, not per replica.
    let busy = bearer_token(&idp, "busy");
    for i in 0..LIMIT {
        let ch = if i.is_multiple_of(2) { &to_a } else { &to_b };
        call(ch, &busy, "laptop", None).await.unwrap();
    }
    for ch in [&to_a, &to_b] {
        denied_with(
            call(ch, &busy, "laptop", None).await,
            tonic::Code::ResourceExhausted,
        );
    }
    assert!(
        metric_reaching(
            &b,
            "ztgate_state_ops_total",
            &[("store", "ratelimit"), ("result", "ok")],
            1.0
        )
        .await
            >= 1.0
    );
}

/// How long `f` took, and its result.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (Duration, T) {
    let start = Instant::now();
    let r = f.await;
    (start.elapsed(), r)
}

/// Generous against a slow CI box, far below "hangs": the store's timeout
/// is 100 ms and the circuit breaker answers at once after a few failures.
const BOUND: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_follows_on_unavailable_and_recovers() {
    let mut redis = RedisServer::start().unwrap();
    let idp = Idp::start().await.unwrap();
    let state = redis_state(&redis, "dpop: deny, first_seen: allow, ratelimit: allow");
    let env = start("state-outage", &idp, &state).await;
    let ch = env.edge_channel_to(&env.gw).await;
    let (dtok, dkey) = dpop_token(&idp, "dora");
    let busy = bearer_token(&idp, "busy");
    call(&ch, &busy, "laptop", None).await.unwrap();

    for outage in ["killed", "hung"] {
        if outage == "killed" {
            redis.stop();
        } else {
            redis.pause().unwrap();
        }
        // Under load: 8 DPoP and 8 bearer calls at a time, five rounds.
        for round in 0..5 {
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..8 {
                // DPoP fails closed: 14 UNAVAILABLE state_unavailable.
                let proof = dkey.proof(&htu(), &dtok).unwrap();
                let (ch2, tok) = (ch.clone(), dtok.clone());
                calls.spawn(async move {
                    let (took, r) = timed(call(&ch2, &tok, "laptop", Some(&proof))).await;
                    (true, took, r)
                });
                // first_seen and ratelimit fail open (local fallback).
                let someone = bearer_token(&idp, &format!("user-{outage}-{round}-{i}"));
                let ch2 = ch.clone();
                calls.spawn(async move {
                    let (took, r) = timed(call(&ch2, &someone, "laptop", None)).await;
                    (false, took, r)
                });
            }
            while let Some(done) = calls.join_next().await {
                let (dpop, took, r) = done.unwrap();
                assert!(took < BOUND, "{outage}: a call took {took:?}");
                if dpop {
                    denied_with(r, tonic::Code::Unavailable);
                } else {
                    r.unwrap();
                }
            }
        }
        assert!(
            env.metric_reaching(
                "ztgate_requests_total",
                &[("reason", "state_unavailable")],
                5.0
            )
            .await
                >= 5.0
        );
        if outage == "killed" {
            redis.restart().unwrap();
        } else {
            redis.resume().unwrap();
        }
        // Back to normal without a restart of the gateway.
        let recovered = eventually(Duration::from_secs(15), async || {
            let proof = dkey.proof(&htu(), &dtok).unwrap();
            call(&ch, &dtok, "laptop", Some(&proof)).await.is_ok()
        })
        .await;
        assert!(recovered, "{outage}: DPoP works again once Redis is back");
    }

    // While Redis was down, the local limiter kept counting: `busy` is
    // limited within what one replica allows.
    let mut refused = false;
    for _ in 0..=LIMIT {
        if call(&ch, &busy, "laptop", None).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the limit still holds");
    let unanswered = || {
        env.metric(
            "ztgate_state_ops_total",
            &[("store", "dpop"), ("result", "circuit_open")],
        ) + env.metric(
            "ztgate_state_ops_total",
            &[("store", "dpop"), ("result", "timeout")],
        )
    };
    eventually(Duration::from_secs(5), async || unanswered() >= 1.0).await;
    assert!(unanswered() >= 1.0);
}
