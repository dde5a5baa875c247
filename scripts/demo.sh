#!/usr/bin/env bash
# Set up and run `ztgate demo` (debug build: fast to compile).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -p ztgate --bin ztgate
exec target/debug/ztgate demo
