#!/usr/bin/env bash
# Set up and run every check CI runs: format, lints, unit and end-to-end tests,
# then the same lints and the demo-less test for the production build.
# Tests read shared test data from ../shared/testdata (override: ZTGATE_TESTDATA).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# A real OPA engine for the policy conformance test (downloaded once into .cache/).
scripts/fetch-opa.sh >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# One test binary at a time: each end-to-end test starts real gateway and
# backend processes, and a small CI box should not run dozens at once.
cargo test --workspace --no-fail-fast
# The production build (the Dockerfile's: no `demo` feature) compiles without
# warnings and its `ztgate demo` says it has none. Mostly the gateway crate
# is compiled again: the dependencies are nearly all those built above.
cargo clippy -p ztgate --no-default-features --bins -- -D warnings
cargo test -p ztgate --no-default-features --test e2e_lean
