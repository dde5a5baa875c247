//! Per-call cost of the `policy` filter with a 20-rule policy
//! (`testdata/refunds.rego`): input building alone, the whole filter
//! (input + evaluation on the VM + decision), the evaluation alone on the
//! VM and on the interpreter, and a one-rule `decision := true` policy as
//! the floor.
//!
//! Run: `cargo bench -p ztgate-policy --bench policy`.
//!
//! Results (Dec 2026, shared 2-core dev VM with parallel builds, so
//! pessimistic; criterion's median):
//!
//! | what | time |
//! |---|---|
//! | input document (17 fields, one claim, one header) | 2.5 µs |
//! | refunds, 20 rules: decide (input + VM + decision) | 10.1 µs |
//! | refunds, 20 rules: evaluation on the VM | 7.0 µs |
//! | refunds, 20 rules: evaluation on the interpreter | 51.9 µs |
//! | one rule (`decision := true`): decide | 2.8 µs |
//!
//! Instructions (callgrind, `--toggle-collect='*PolicyFilter*decide*'`,
//! inclusive Ir over the profiled calls): refunds decide 114,200 per call
//! (input document 21,800; VM `set_input` 5,700 and `execute` 85,300);
//! one-rule decide 26,300. With the decision cache, a remembered decision
//! (the same input again) costs 4,100 instructions, 0.26 µs
//! (`examples/decide_cost.rs`).
//!
//! A pooled interpreter engine and a fresh clone of the prepared one cost
//! the same within noise (55 µs and 59 µs before the VM): the clone shares
//! the parsed modules and data by reference count.
#![allow(clippy::unwrap_used, clippy::expect_used)] // bench set-up: a panic is a broken bench

mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use support::{facts, filter, request_parts, view, REFUNDS, REFUNDS_INPUT};

fn bench(c: &mut Criterion) {
    // Evaluated on every call, as before the decision cache; and cached.
    let refunds = filter(REFUNDS, &format!("{REFUNDS_INPUT}decision_cache: 0\n"));
    let cached = filter(REFUNDS, REFUNDS_INPUT);
    let trivial = filter("package ztgate\ndecision := true\n", "decision_cache: 0\n");
    let (headers, tls) = request_parts();
    let view = view(&headers, &tls);
    let facts = facts();
    assert_eq!(
        refunds.decide(&view, &facts),
        ztgate_filter::Decision::Continue,
        "the bench request must be allowed (every rule evaluated)"
    );
    assert!(refunds.explain(&view, &facts).answer.is_ok());

    let mut g = c.benchmark_group("policy");
    let spec = ztgate_policy::input::InputSpec {
        claims: vec!["tenant".into()],
        headers: vec![http::HeaderName::from_static("x-tenant")],
    };
    g.bench_function("input document", |b| {
        b.iter(|| {
            black_box(ztgate_policy::input::build(
                &spec,
                black_box(&view),
                black_box(&facts),
            ))
        })
    });
    g.bench_function("refunds_20_rules/decide (input + VM + decision)", |b| {
        b.iter(|| black_box(refunds.decide(black_box(&view), black_box(&facts))))
    });
    let input = regorus::Value::from(refunds.explain(&view, &facts).input);
    g.bench_function("refunds_20_rules/decide, remembered (key + lookup)", |b| {
        b.iter(|| black_box(cached.decide(black_box(&view), black_box(&facts))))
    });
    g.bench_function("refunds_20_rules/eval on the VM", |b| {
        b.iter(|| black_box(refunds.compiled().eval(black_box(input.clone()))))
    });
    g.bench_function("refunds_20_rules/eval on the interpreter", |b| {
        b.iter(|| {
            black_box(
                refunds
                    .compiled()
                    .eval_interpreted(black_box(input.clone())),
            )
        })
    });
    g.bench_function("trivial_1_rule/decide", |b| {
        b.iter(|| black_box(trivial.decide(black_box(&view), black_box(&facts))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
