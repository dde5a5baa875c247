#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! `RedisStore` against a real `redis-server` (one per test, from
//! `ztgate_testkit::redis`).
//!
//! Timing assertions have wide margins (the CI box has two cores and runs
//! these tests in parallel): expiries are checked with `PTTL` ranges and
//! sleeps several times the TTL, and "fails fast" means well under the
//! configured timeout, never a tight bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use tokio::task::JoinSet;
use ztgate_filter::{Bind, StateAnswer, StateError, StateOp, StateStore, StateUse};
use ztgate_state::breaker::BreakerConfig;
use ztgate_state::raw::Secret;
use ztgate_state::{RedisConfig, RedisStore};
use ztgate_testkit::redis::RedisServer;

const USE: StateUse = StateUse::Dpop;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Generous timeout for the semantics tests: they are about answers, not
/// latency.
const RELAXED: Duration = Duration::from_secs(1);

fn config(url: &str, timeout: Duration) -> RedisConfig {
    let mut c = RedisConfig::new(url).unwrap();
    c.timeout = timeout;
    c.key_prefix = "t:".into();
    c
}

/// A breaker that never opens (timeout tests look at single operations).
fn no_breaker() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: u32::MAX,
        ..BreakerConfig::default()
    }
}

fn quick_breaker() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        base_cooldown: ms(300),
        max_cooldown: ms(1000),
        probe_lease: ms(300),
    }
}

fn store(server: &RedisServer) -> RedisStore {
    RedisStore::with_breaker(&config(&server.url(), RELAXED), no_breaker()).unwrap()
}

/// A plain client to look at what the store wrote.
async fn raw(server: &RedisServer) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn pttl(conn: &mut ::redis::aio::MultiplexedConnection, key: &str) -> i64 {
    ::redis::cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

/// Retry `op` until it succeeds or `limit` passes.
async fn eventually<T, F, Fut>(limit: Duration, mut op: F) -> Result<T, StateError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StateError>>,
{
    let start = Instant::now();
    loop {
        let r = op().await;
        if r.is_ok() || start.elapsed() > limit {
            return r;
        }
        tokio::time::sleep(ms(50)).await;
    }
}

#[tokio::test]
async fn insert_once_is_true_once_per_ttl() {
    let server = RedisServer::start().unwrap();
    let s = store(&server);
    let mut r = raw(&server).await;

    assert!(s.insert_once(USE, "jti:1", ms(1000)).await.unwrap());
    assert!(!s.insert_once(USE, "jti:1", ms(1000)).await.unwrap());
    assert!(!s
        .insert_once(USE, "jti:1", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(s.insert_once(USE, "jti:2", ms(1000)).await.unwrap());
    let ttl = pttl(&mut r, "t:jti:1").await;
    assert!((1..=1000).contains(&ttl), "PTTL {ttl}");

    // Expired well after its TTL: recorded anew.
    tokio::time::sleep(ms(2500)).await;
    assert_eq!(pttl(&mut r, "t:jti:1").await, -2);
    assert!(s
        .insert_once(USE, "jti:1", Duration::from_secs(60))
        .await
        .unwrap());
    let ttl = pttl(&mut r, "t:jti:1").await;
    assert!((50_000..=60_000).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn bind_returns_the_live_binding_and_never_extends_it() {
    let server = RedisServer::start().unwrap();
    let s = store(&server);
    let mut r = raw(&server).await;

    assert_eq!(
        s.bind(USE, "dev:a", "fp-1", Duration::from_secs(60))
            .await
            .unwrap(),
        Bind::Bound
    );
    let first = pttl(&mut r, "t:dev:a").await;
    assert!((50_000..=60_000).contains(&first), "PTTL {first}");

    tokio::time::sleep(ms(50)).await;
    assert_eq!(
        s.bind(USE, "dev:a", "fp-2", Duration::from_secs(3600))
            .await
            .unwrap(),
        Bind::Existing("fp-1".into())
    );
    let second = pttl(&mut r, "t:dev:a").await;
    assert!(
        second < first && second > 50_000,
        "PTTL {first} then {second}"
    );
    let v: String = r.get("t:dev:a").await.unwrap();
    assert_eq!(v, "fp-1");

    // A value with spaces and non-ASCII comes back as it went in.
    let odd = "fp 2 — ünïcode";
    assert_eq!(
        s.bind(USE, "dev:b", odd, ms(1000)).await.unwrap(),
        Bind::Bound
    );
    assert_eq!(
        s.bind(USE, "dev:b", "x", ms(1000)).await.unwrap(),
        Bind::Existing(odd.into())
    );

    // Expired: a new binding.
    tokio::time::sleep(ms(2500)).await;
    assert_eq!(
        s.bind(USE, "dev:b", "fp-3", ms(1000)).await.unwrap(),
        Bind::Bound
    );
}

#[tokio::test]
async fn rebind_replaces_the_value_and_keeps_the_expiry() {
    let server = RedisServer::start().unwrap();
    let s = store(&server);
    let mut r = raw(&server).await;

    s.bind(USE, "dev:a", "old", Duration::from_secs(60))
        .await
        .unwrap();
    let before = pttl(&mut r, "t:dev:a").await;
    s.rebind(USE, "dev:a", "new").await.unwrap();
    let after = pttl(&mut r, "t:dev:a").await;
    assert!(
        after <= before && after > 50_000,
        "PTTL {before} then {after}"
    );
    let v: String = r.get("t:dev:a").await.unwrap();
    assert_eq!(v, "new");
    assert_eq!(
        s.bind(USE, "dev:a", "other", Duration::from_secs(60))
            .await
            .unwrap(),
        Bind::Existing("new".into())
    );

    // Absent: nothing is created.
    s.rebind(USE, "dev:none", "v").await.unwrap();
    let exists: bool = r.exists("t:dev:none").await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn hit_counts_in_a_fixed_window_that_starts_at_the_first_hit() {
    let server = RedisServer::start().unwrap();
    let s = store(&server);
    let mut r = raw(&server).await;
    let minute = Duration::from_secs(60);

    for n in 1..=3 {
        let h = s
            .hit(StateUse::RateLimit, "rl:alice", minute)
            .await
            .unwrap();
        assert_eq!(h.count, n);
        assert!(
            h.resets_in <= minute && h.resets_in > Duration::from_secs(50),
            "{h:?}"
        );
    }
    // The window is not extended by later hits.
    let ttl = pttl(&mut r, "t:rl:alice").await;
    assert!((50_000..=60_000).contains(&ttl), "PTTL {ttl}");

    // A short window resets.
    let h = s
        .hit(StateUse::RateLimit, "rl:bob", ms(1000))
        .await
        .unwrap();
    assert_eq!(h.count, 1);
    assert!(h.resets_in <= ms(1000), "{h:?}");
    assert_eq!(
        s.hit(StateUse::RateLimit, "rl:bob", ms(1000))
            .await
            .unwrap()
            .count,
        2
    );
    tokio::time::sleep(ms(2500)).await;
    let h = s
        .hit(StateUse::RateLimit, "rl:bob", ms(1000))
        .await
        .unwrap();
    assert_eq!(h.count, 1, "{h:?}");
}

#[tokio::test]
async fn hit_gives_a_counter_without_expiry_one() {
    let server = RedisServer::start().unwrap();
    let s = store(&server);
    let mut r = raw(&server).await;
    let _: () = r.set("t:rl:stuck", 5).await.unwrap();
    assert_eq!(pttl(&mut r, "t:rl:stuck").await, -1);

    let h = s
        .hit(StateUse::RateLimit, "rl:stuck", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(h.count, 6);
    assert_eq!(h.resets_in, Duration::from_secs(60));
    let ttl = pttl(&mut r, "t:rl:stuck").await;
    assert!((50_000..=60_000).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn scripts_survive_a_script_cache_flush() {
    let server = RedisServer::start().unwrap();
    let s = store(&server);
    let mut r = raw(&server).await;
    assert_eq!(
        s.bind(USE, "dev:a", "v", Duration::from_secs(60))
            .await
            .unwrap(),
        Bind::Bound
    );
    // What a restarted or failed-over server looks like to EVALSHA.
    let _: () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(
        s.bind(USE, "dev:a", "w", Duration::from_secs(60))
            .await
            .unwrap(),
        Bind::Existing("v".into())
    );
    let _: () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(
        s.hit(USE, "rl:x", Duration::from_secs(60))
            .await
            .unwrap()
            .count,
        1
    );
}

#[tokio::test]
async fn keys_carry_the_prefix() {
    let server = RedisServer::start().unwrap();
    let mut r = raw(&server).await;

    let default = RedisStore::new(&RedisConfig::new(&server.url()).unwrap()).unwrap();
    assert!(default
        .insert_once(USE, "dpop:abc", Duration::from_secs(60))
        .await
        .unwrap());
    let exists: bool = r.exists("ztgate:dpop:abc").await.unwrap();
    assert!(exists);

    let mut c = config(&server.url(), RELAXED);
    c.key_prefix = "gw-eu:".into();
    let other = RedisStore::new(&c).unwrap();
    // Same logical key, another prefix: another key.
    assert!(other
        .insert_once(USE, "dpop:abc", Duration::from_secs(60))
        .await
        .unwrap());
    let exists: bool = r.exists("gw-eu:dpop:abc").await.unwrap();
    assert!(exists);
    let exists: bool = r.exists("dpop:abc").await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn concurrent_operations_are_atomic() {
    let server = RedisServer::start().unwrap();
    let s = Arc::new(store(&server));

    let mut set = JoinSet::new();
    for _ in 0..50 {
        let s = s.clone();
        set.spawn(async move {
            s.insert_once(USE, "jti:race", Duration::from_secs(60))
                .await
        });
    }
    let mut firsts = 0;
    while let Some(r) = set.join_next().await {
        if r.unwrap().unwrap() {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);

    let mut set = JoinSet::new();
    for i in 0..50 {
        let s = s.clone();
        set.spawn(async move {
            (
                i,
                s.bind(USE, "dev:race", &format!("v{i}"), Duration::from_secs(60))
                    .await,
            )
        });
    }
    let mut bound = Vec::new();
    let mut existing = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.unwrap() {
            (i, Ok(Bind::Bound)) => bound.push(format!("v{i}")),
            (_, Ok(Bind::Existing(v))) => existing.push(v),
            (_, Err(e)) => panic!("{e}"),
        }
    }
    assert_eq!(bound.len(), 1);
    assert_eq!(existing.len(), 49);
    assert!(
        existing.iter().all(|v| *v == bound[0]),
        "{bound:?} {existing:?}"
    );

    let mut set = JoinSet::new();
    for _ in 0..50 {
        let s = s.clone();
        set.spawn(async move {
            s.hit(StateUse::RateLimit, "rl:race", Duration::from_secs(60))
                .await
        });
    }
    let mut counts = Vec::new();
    while let Some(r) = set.join_next().await {
        counts.push(r.unwrap().unwrap().count);
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=50).collect::<Vec<u64>>());
}

#[tokio::test]
async fn every_operation_times_out_on_a_hung_server() {
    let mut server = RedisServer::start().unwrap();
    let timeout = ms(200);
    let s = RedisStore::with_breaker(&config(&server.url(), timeout), no_breaker()).unwrap();
    // Connected and scripts loaded before the server hangs.
    assert!(s
        .insert_once(USE, "warm", Duration::from_secs(60))
        .await
        .unwrap());

    server.pause().unwrap();
    let bound = timeout + ms(800);
    let t = Instant::now();
    assert_eq!(
        s.insert_once(USE, "k", Duration::from_secs(60)).await,
        Err(StateError::Timeout)
    );
    assert!(t.elapsed() < bound, "{:?}", t.elapsed());
    let t = Instant::now();
    assert_eq!(
        s.bind(USE, "k2", "v", Duration::from_secs(60)).await,
        Err(StateError::Timeout)
    );
    assert!(t.elapsed() < bound, "{:?}", t.elapsed());
    let t = Instant::now();
    assert_eq!(s.rebind(USE, "k2", "w").await, Err(StateError::Timeout));
    assert!(t.elapsed() < bound, "{:?}", t.elapsed());
    let t = Instant::now();
    assert_eq!(
        s.hit(USE, "k3", Duration::from_secs(60)).await,
        Err(StateError::Timeout)
    );
    assert!(t.elapsed() < bound, "{:?}", t.elapsed());
    // Each op did take (about) the timeout: it really waited for Redis.
    assert!(t.elapsed() >= timeout - ms(5), "{:?}", t.elapsed());

    server.resume().unwrap();
    eventually(Duration::from_secs(10), || {
        s.insert_once(USE, "after", Duration::from_secs(60))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_breaker_opens_on_a_hung_server_and_closes_when_it_answers_again() {
    let mut server = RedisServer::start().unwrap();
    let timeout = ms(300);
    let s = RedisStore::with_breaker(&config(&server.url(), timeout), quick_breaker()).unwrap();
    assert!(s
        .insert_once(USE, "warm", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(!s.circuit_open());

    server.pause().unwrap();
    for i in 0..3 {
        assert_eq!(
            s.insert_once(USE, &format!("k{i}"), Duration::from_secs(60))
                .await,
            Err(StateError::Timeout)
        );
    }
    assert!(s.circuit_open());
    // Open: refused at once, without waiting for the hung server.
    for i in 0..20 {
        let t = Instant::now();
        let r = s
            .hit(
                StateUse::RateLimit,
                &format!("k{i}"),
                Duration::from_secs(60),
            )
            .await;
        let took = t.elapsed();
        assert_eq!(r, Err(StateError::CircuitOpen), "call {i}");
        assert!(
            took < ms(150),
            "call {i} took {took:?}, the timeout is {timeout:?}"
        );
    }

    server.resume().unwrap();
    eventually(Duration::from_secs(15), || {
        s.insert_once(USE, "back", Duration::from_secs(60))
    })
    .await
    .unwrap();
    assert!(!s.circuit_open());
    assert_eq!(
        s.bind(USE, "dev", "v", Duration::from_secs(60)).await,
        Ok(Bind::Bound)
    );
}

#[tokio::test]
async fn a_killed_server_fails_fast_and_a_restarted_one_is_used_again() {
    let mut server = RedisServer::start().unwrap();
    let s = RedisStore::with_breaker(&config(&server.url(), ms(300)), quick_breaker()).unwrap();
    assert!(s
        .insert_once(USE, "warm", Duration::from_secs(60))
        .await
        .unwrap());

    server.stop();
    // Connection refused is an answer: errors, and the breaker opens.
    let start = Instant::now();
    let mut open = false;
    while start.elapsed() < Duration::from_secs(10) {
        match s.insert_once(USE, "k", Duration::from_secs(60)).await {
            Err(StateError::CircuitOpen) => {
                open = true;
                break;
            }
            Err(StateError::Backend(_) | StateError::Timeout) => {}
            Ok(v) => panic!("answered {v} while the server is down"),
        }
        tokio::time::sleep(ms(20)).await;
    }
    assert!(open, "the breaker did not open");

    server.restart().unwrap();
    eventually(Duration::from_secs(15), || {
        s.insert_once(USE, "k", Duration::from_secs(60))
    })
    .await
    .unwrap();
    // The restarted server is empty: the new key was recorded there.
    let mut r = raw(&server).await;
    let exists: bool = r.exists("t:k").await.unwrap();
    assert!(exists);
}

#[tokio::test]
async fn a_server_down_at_start_is_used_once_it_comes_up() {
    let mut server = RedisServer::start().unwrap();
    server.stop();
    let s = RedisStore::with_breaker(&config(&server.url(), ms(300)), quick_breaker()).unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        assert!(s
            .insert_once(USE, "k", Duration::from_secs(60))
            .await
            .is_err());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    server.restart().unwrap();
    eventually(Duration::from_secs(15), || {
        s.insert_once(USE, "k", Duration::from_secs(60))
    })
    .await
    .unwrap();
}

/// The store does not depend on the runtime of its callers: a caller's
/// runtime that stops (and its tasks with it) does not break the store.
#[tokio::test]
async fn works_from_any_runtime_even_after_one_has_stopped() {
    let server = RedisServer::start().unwrap();
    let s = Arc::new(store(&server));

    // First use (connect, driver tasks) from a runtime that then goes away.
    let s2 = s.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt
            .block_on(s2.insert_once(USE, "a", Duration::from_secs(60)))
            .unwrap());
        drop(rt);
    })
    .join()
    .unwrap();

    assert!(s
        .insert_once(USE, "b", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(!s
        .insert_once(USE, "a", Duration::from_secs(60))
        .await
        .unwrap());

    // Several single-thread runtimes at once, like the gateway's.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    for j in 0..20 {
                        assert!(s
                            .insert_once(USE, &format!("t{i}-{j}"), Duration::from_secs(60))
                            .await
                            .unwrap());
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[tokio::test]
async fn the_password_from_the_config_replaces_the_urls() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]).unwrap();
    let port = server.port();

    let mut c = config(&format!("redis://:wrong@127.0.0.1:{port}"), RELAXED);
    c.password = Some(Secret::new("s3cret"));
    let s = RedisStore::with_breaker(&c, no_breaker()).unwrap();
    assert!(s
        .insert_once(USE, "k", Duration::from_secs(60))
        .await
        .unwrap());
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("s3cret") && !dbg.contains("wrong"), "{dbg}");

    let mut c = config(&server.url(), RELAXED);
    c.password = Some(Secret::new("not-it"));
    let s = RedisStore::with_breaker(&c, no_breaker()).unwrap();
    match s.insert_once(USE, "k", Duration::from_secs(60)).await {
        Err(StateError::Backend(m)) => assert!(!m.contains("not-it"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn operations_are_counted() {
    ztgate_state::register_metrics();
    let series = |result: &str| {
        ztgate_state::metrics::OPS
            .with_label_values(&["first_seen", "bind", result])
            .get()
    };
    let ok_before = series("ok");
    let open_before = series("circuit_open");

    let mut server = RedisServer::start().unwrap();
    let s = RedisStore::with_breaker(&config(&server.url(), ms(200)), quick_breaker()).unwrap();
    s.bind(StateUse::FirstSeen, "d", "v", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(series("ok") > ok_before);

    server.stop();
    for _ in 0..10 {
        let _ = s
            .bind(StateUse::FirstSeen, "d", "v", Duration::from_secs(60))
            .await;
    }
    assert!(series("circuit_open") > open_before);
}

#[tokio::test]
async fn build_store_shares_one_store_and_can_dial_ahead() {
    let server = RedisServer::start().unwrap();
    let yaml = format!(
        "backend: redis\nredis: {{ url: '{}', key_prefix: 'b:' }}\non_unavailable: {{ ratelimit: deny }}",
        server.url()
    );
    let section: ztgate_state::StateSection = serde_yaml::from_str(&yaml).unwrap();
    let built = ztgate_state::build_store(&section, "state")
        .unwrap()
        .unwrap();
    assert_eq!(
        built.shared.on_unavailable.ratelimit,
        ztgate_filter::Unavailable::Deny
    );
    built.store.connect_in_background();
    // The connection comes up without any operation: a second client.
    let mut r = raw(&server).await;
    let start = Instant::now();
    loop {
        let clients: String = ::redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut r)
            .await
            .unwrap();
        if clients.lines().count() >= 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{clients}");
        tokio::time::sleep(ms(50)).await;
    }
    // The seam and the concrete store are the same store.
    assert!(built
        .shared
        .store
        .insert_once(USE, "k", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(!built
        .store
        .insert_once(USE, "k", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(!built.store.circuit_open());
    let exists: bool = r.exists("b:k").await.unwrap();
    assert!(exists);
}

/// Calls of each top-level command so far (`INFO commandstats`; commands
/// a script runs are listed under their own names).
async fn calls(r: &mut ::redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(r)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_batch_is_one_pipeline_and_survives_a_script_cache_flush() {
    let server = RedisServer::start().unwrap();
    let s = store(&server);
    let mut r = raw(&server).await;
    let ops = |jti: &str| {
        vec![
            (
                StateUse::Dpop,
                StateOp::InsertOnce {
                    key: format!("dpop:{jti}"),
                    ttl: Duration::from_secs(60),
                },
            ),
            (
                StateUse::RateLimit,
                StateOp::Hit {
                    key: "rl:alice".into(),
                    window: Duration::from_secs(60),
                },
            ),
        ]
    };
    s.batch(&ops("warm")).await;
    let set = calls(&mut r, "set").await;
    let evalsha = calls(&mut r, "evalsha").await;
    let eval = calls(&mut r, "eval").await;
    let answers = s.batch(&ops("one")).await;
    // One SET and one EVALSHA, sent as one pipeline: nothing else.
    assert_eq!(calls(&mut r, "set").await, set + 1);
    assert_eq!(calls(&mut r, "evalsha").await, evalsha + 1);
    assert_eq!(calls(&mut r, "eval").await, eval);
    assert_eq!(answers[0], Ok(StateAnswer::Inserted(true)));
    assert!(matches!(answers[1], Ok(StateAnswer::Hit(h)) if h.count == 2));
    // A flushed script cache: the EVALSHA alone is retried; the SET NX is
    // not sent twice (else a fresh proof would look like a replay).
    let _: () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut r)
        .await
        .unwrap();
    let answers = s.batch(&ops("two")).await;
    assert_eq!(answers[0], Ok(StateAnswer::Inserted(true)));
    assert!(matches!(answers[1], Ok(StateAnswer::Hit(h)) if h.count == 3));
    // And a replay is a replay.
    let answers = s.batch(&ops("two")).await;
    assert_eq!(answers[0], Ok(StateAnswer::Inserted(false)));
}
