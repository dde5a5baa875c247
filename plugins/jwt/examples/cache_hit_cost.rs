//! Instructions per verified-token cache hit, for callgrind: the jwt filter
//! on a token it has already verified, `N` times, each call in `one_call`
//! (never inlined) so that only those calls are counted:
//!
//! ```sh
//! cargo build --release -p ztgate-jwt --example cache_hit_cost
//! valgrind --tool=callgrind --toggle-collect='cache_hit_cost::one_call' \
//!     target/release/examples/cache_hit_cost
//! ```
//!
//! Instructions per hit = the total `Ir` / `N` (printed). Counts repeat to
//! 0.1% whatever else runs, so they judge a change to the hit path.

// Example set-up may panic on a broken fixture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::json;
use support::*;

const N: usize = 20_000;

#[inline(never)]
fn one_call(rt: &tokio::runtime::Runtime, req: &Req, filter: &ztgate_jwt::JwtFilter) {
    std::hint::black_box(rt.block_on(req.run(filter)));
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let key = TestKey::rs256("rsa");
    let dir = std::env::temp_dir().join(format!("ztgate-jwt-hit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.json");
    std::fs::write(&file, json!({"keys": [key.jwk]}).to_string()).unwrap();
    let filter = build(&format!(
        "cache_capacity: 1000\nissuers:\n  - issuer: https://idp.example\n    keys_file: {}\n    audiences: [orders]\n    algorithms: [RS256]\n",
        file.display()
    ));
    let token = sign(&key, &claims("https://idp.example", now()));
    let req = Req::bearer(&token);
    assert_eq!(rt.block_on(req.reason(&filter)), None);
    for _ in 0..N {
        one_call(&rt, &req, &filter);
    }
    println!("{N} cache hits of a {}-byte RS256 token", token.len());
    let _ = std::fs::remove_dir_all(&dir);
}
