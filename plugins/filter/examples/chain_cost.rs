//! What the chain's dynamic dispatch costs per filter, for callgrind: is an
//! enum of the built-in filters (static dispatch, no boxed future per
//! filter) worth its code? Five filters that decide nothing, `N` requests
//! each way, each way in its own never-inlined function so that callgrind
//! counts only it:
//!
//! - `chain`: [`Chain::run`] as the gateway calls it (boxed `evaluate`
//!   future per filter, mode, timing, verdict);
//! - `boxed`: only the filters' `evaluate` through `Box<dyn Filter>` (one
//!   heap-allocated future each, as `async_trait` makes it);
//! - `direct`: the same filters called through an enum, their futures on the
//!   stack.
//!
//! ```sh
//! cargo build --release -p ztgate-filter --example chain_cost
//! for f in chain boxed direct; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$f \
//!     --toggle-collect="chain_cost::$f" target/release/examples/chain_cost
//!   callgrind_annotate /tmp/cg.$f | grep 'PROGRAM TOTALS'
//! done
//! ```
//!
//! Instructions per filter = the total `Ir` / (`N` × 5). `boxed` − `direct`
//! is what static dispatch would save per filter and request.

// Example set-up may panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use http::{HeaderMap, Method};
use ztgate_filter::{Chain, Decision, Facts, Filter, Mode, RequestView, Stage, TlsFacts};

const N: usize = 20_000;
const FILTERS: usize = 5;

/// A filter that looks at one header and decides nothing, as cheap as a
/// filter gets: what is left is the dispatch around it.
struct Quiet;

impl Quiet {
    #[inline]
    fn decide(&self, req: &RequestView<'_>) -> Decision {
        black_box(req.headers.len());
        Decision::Continue
    }
}

#[async_trait::async_trait]
impl Filter for Quiet {
    fn name(&self) -> &'static str {
        "quiet"
    }
    async fn evaluate(&self, req: &RequestView<'_>, _: &mut Facts) -> Decision {
        self.decide(req)
    }
}

/// The static alternative: one variant per built-in filter.
enum Builtin {
    Quiet(Quiet),
}

impl Builtin {
    async fn evaluate(&self, req: &RequestView<'_>, _: &mut Facts) -> Decision {
        match self {
            Builtin::Quiet(q) => q.decide(req),
        }
    }
}

/// Poll a future that never waits to its end.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("these filters never wait"),
    }
}

#[inline(never)]
fn chain(c: &Chain, req: &RequestView<'_>, facts: &mut Facts) -> usize {
    black_box("chain");
    ready(c.run(req, facts)).verdicts.len()
}

#[inline(never)]
fn boxed(filters: &[Box<dyn Filter>], req: &RequestView<'_>, facts: &mut Facts) -> usize {
    black_box("boxed");
    let mut n = 0;
    for f in filters {
        n += usize::from(ready(f.evaluate(req, facts)) == Decision::Continue);
    }
    n
}

#[inline(never)]
fn direct(filters: &[Builtin], req: &RequestView<'_>, facts: &mut Facts) -> usize {
    black_box("direct");
    let mut n = 0;
    for f in filters {
        n += usize::from(ready(f.evaluate(req, facts)) == Decision::Continue);
    }
    n
}

fn main() {
    let headers = HeaderMap::new();
    let tls = TlsFacts::default();
    let req = RequestView {
        method: &Method::POST,
        path: "/orders.v1.Orders/Get",
        authority: None,
        headers: &headers,
        tls: &tls,
        client_ip: None,
        socket_ip: None,
        now: SystemTime::now(),
    };
    let mut facts = Facts::default();
    let c = Chain::new(
        (0..FILTERS)
            .map(|_| Stage::new(Box::new(Quiet), Mode::Enforce))
            .collect(),
    );
    let dyns: Vec<Box<dyn Filter>> = (0..FILTERS)
        .map(|_| Box::new(Quiet) as Box<dyn Filter>)
        .collect();
    let statics: Vec<Builtin> = (0..FILTERS).map(|_| Builtin::Quiet(Quiet)).collect();
    let mut total = 0;
    for _ in 0..N {
        total += chain(&c, &req, &mut facts);
        total += boxed(&dyns, &req, &mut facts);
        total += direct(&statics, &req, &mut facts);
    }
    assert_eq!(total, 3 * N * FILTERS);
    println!("{N} requests x {FILTERS} filters, each way");
}
