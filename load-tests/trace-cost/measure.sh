#!/usr/bin/env bash
# Per-call cost of tracing, off / sampled 1 % / sampled 100 % side by side:
# wall clock (median of interleaved rounds) and callgrind instruction counts
# of the request-path work and of the export thread's encoding per span.
# Usage: load-tests/trace-cost/measure.sh [OUT_DIR]   (needs valgrind)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-load-tests/results/$(date -u +%Y-%m-%d)-tracing}"
mkdir -p "$out"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ztgate-trace-cost
bin="$target/release/ztgate-trace-cost"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
{
  echo "# tracing per-call cost ($(date -u +%FT%TZ))"
  echo
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "## wall clock, request path only (export stand-in drops the spans)"
  echo
  "$bin" 100000 9
  echo
  echo "## instructions per call (callgrind, request path: \`measured_call\`)"
  echo
  echo "| mode | instructions/call | × sampled-1% |"
  echo "|---|---:|---:|"
  declare -A ir
  for m in off sampled-1% sampled-100% client-sampled client-unsampled; do
    f="$tmp/cg.${m//%/}"
    valgrind --tool=callgrind --toggle-collect='*measured_call*' \
      --callgrind-out-file="$f" "$bin" 20000 1 "$m" >/dev/null 2>&1
    ir[$m]=$(( $(awk '/^totals:/ {print $2}' "$f") / 20000 ))
  done
  for m in off sampled-1% sampled-100% client-sampled client-unsampled; do
    echo "| $m | ${ir[$m]} | $(awk -v a="${ir[$m]}" -v b="${ir[sampled-1%]}" 'BEGIN { printf "%.2f", a / b }') |"
  done
  echo
  echo "## export thread, per sampled span (callgrind: \`export_side\`, OTLP conversion + protobuf encoding, no network write)"
  echo
  f="$tmp/cg.export"
  valgrind --tool=callgrind --toggle-collect='*export_side*' \
    --callgrind-out-file="$f" "$bin" 20000 1 sampled-100% encode >"$tmp/export.out" 2>&1
  spans=$(awk -F'|' '/^\| sampled-100%/ {gsub(/ /, "", $6); print $6}' "$tmp/export.out")
  echo "- spans encoded: $spans; instructions/span: $(( $(awk '/^totals:/ {print $2}' "$f") / spans ))"
  echo
  echo "## wall clock with the export stand-in encoding (competes for the CPUs)"
  echo
  "$bin" 20000 5 all encode
} | tee "$out/trace-cost.md"
