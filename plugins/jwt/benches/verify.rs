//! Per-request cost of the jwt filter: a cache hit, a cache miss (RS256 and
//! ES256), and the raw `jsonwebtoken::decode` of the same token as the floor
//! (pingora-limits style: the baseline runs in the same run).
//!
//! Run: `cargo bench -p ztgate-jwt --bench verify`.
//!
//! Results on the shared 2-core dev box (criterion, 3 s measurement):
//! RS256: cache hit 2.18 µs, miss 71.1 µs, jsonwebtoken floor 60.6 µs (miss = floor + 10.5 µs)
//! ES256: cache hit 1.83 µs, miss 102.4 µs, jsonwebtoken floor 98.2 µs (miss = floor + 4.2 µs)
//! The hit includes a current-thread `block_on`, a fresh `Facts` and the
//! `VerifiedToken` clone into it.

// Bench set-up, like tests, may panic on a broken fixture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::json;
use support::*;

fn static_filter(key: &TestKey, cache: usize) -> ztgate_jwt::JwtFilter {
    let dir = std::env::temp_dir().join(format!("ztgate-jwt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.json", key.kid));
    std::fs::write(&file, json!({"keys": [key.jwk]}).to_string()).unwrap();
    build(&format!(
        "cache_capacity: {cache}\nissuers:\n  - issuer: https://idp.example\n    keys_file: {}\n    audiences: [orders]\n    algorithms: [RS256, ES256]\n",
        file.display()
    ))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for key in [TestKey::rs256("rsa"), TestKey::es256("ec")] {
        let name = alg_name(key.alg);
        let token = sign(&key, &claims("https://idp.example", now()));
        let req = Req::bearer(&token);

        let cached = static_filter(&key, 100);
        assert_eq!(rt.block_on(req.reason(&cached)), None);
        c.bench_function(&format!("{name}/filter_cache_hit"), |b| {
            b.iter(|| rt.block_on(req.run(&cached)))
        });

        let uncached = static_filter(&key, 0);
        assert_eq!(rt.block_on(req.reason(&uncached)), None);
        c.bench_function(&format!("{name}/filter_cache_miss"), |b| {
            b.iter(|| rt.block_on(req.run(&uncached)))
        });

        let dk = DecodingKey::from_jwk(&serde_json::from_value(key.jwk.clone()).unwrap()).unwrap();
        let mut v = Validation::new(key.alg);
        v.set_audience(&["orders"]);
        v.set_issuer(&["https://idp.example"]);
        c.bench_function(&format!("{name}/jsonwebtoken_decode_floor"), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(&token, &dk, &v)
                    .unwrap()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
