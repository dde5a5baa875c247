//! Instructions per `policy` decision, for callgrind: the 20-rule refund
//! policy deciding the same allowed call `N` times evaluated on the VM
//! (`decision_cache: 0`) and `N` times remembered, each call in its own
//! never-inlined function so that callgrind counts only those:
//!
//! ```sh
//! cargo build --release -p ztgate-policy --example decide_cost
//! for f in evaluated remembered; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$f \
//!     --toggle-collect="decide_cost::$f" target/release/examples/decide_cost
//!   callgrind_annotate /tmp/cg.$f | grep 'PROGRAM TOTALS'
//! done
//! ```
//!
//! Instructions per decision = the total `Ir` / `N`. Counts repeat to
//! 0.1% whatever else runs on the machine.

// Example set-up may panic on a broken fixture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support.rs"]
mod support;

use std::hint::black_box;
use std::time::Instant;

use support::{facts, filter, request_parts, view, REFUNDS, REFUNDS_INPUT};
use ztgate_filter::{Decision, Facts, RequestView};
use ztgate_policy::PolicyFilter;

const N: usize = 5_000;

#[inline(never)]
fn evaluated(f: &PolicyFilter, req: &RequestView<'_>, facts: &Facts) -> Decision {
    // A body of its own: identical functions would be folded into one
    // symbol, and callgrind would count both loops under it.
    black_box("evaluated");
    black_box(f.decide(req, facts))
}

#[inline(never)]
fn remembered(f: &PolicyFilter, req: &RequestView<'_>, facts: &Facts) -> Decision {
    black_box("remembered");
    black_box(f.decide(req, facts))
}

fn main() {
    let uncached = filter(REFUNDS, &format!("{REFUNDS_INPUT}decision_cache: 0\n"));
    let cached = filter(REFUNDS, REFUNDS_INPUT);
    let (headers, tls) = request_parts();
    let req = view(&headers, &tls);
    let facts = facts();
    assert_eq!(cached.decide(&req, &facts), Decision::Continue);
    let t = Instant::now();
    for _ in 0..N {
        assert_eq!(evaluated(&uncached, &req, &facts), Decision::Continue);
    }
    let e = t.elapsed();
    let t = Instant::now();
    for _ in 0..N {
        assert_eq!(remembered(&cached, &req, &facts), Decision::Continue);
    }
    let r = t.elapsed();
    // Wall time, for a feel only (noisy on a shared machine; meaningless
    // under callgrind): instructions are the measure.
    println!(
        "{N} decisions evaluated ({:.2} µs each), {N} remembered ({:.2} µs each)",
        e.as_secs_f64() * 1e6 / N as f64,
        r.as_secs_f64() * 1e6 / N as f64
    );
}
