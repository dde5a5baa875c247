#!/usr/bin/env bash
# Set up and run every check CI runs: format, lints, unit and end-to-end tests.
# Tests read shared test data from ../shared/testdata (override: ZTGATE_TESTDATA).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# One test binary at a time: each end-to-end test starts real gateway and
# backend processes, and a small CI box should not run dozens at once.
cargo test --workspace --no-fail-fast
