#!/usr/bin/env bash
# Run every cargo-fuzz target in turn, each for SECONDS (default 60), and
# print what libFuzzer executed. See fuzz/README.md.
#
#   scripts/fuzz.sh [SECONDS]
#
# Environment:
#   FUZZ_TARGETS    targets to run, space-separated (default: all, in order)
#   FUZZ_SANITIZER  address (default) | none: ASan catches memory errors in
#                   unsafe dependency code and caps single allocations;
#                   `none` runs about twice as many inputs per second
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer, sancov passes) to
# rustc. With only a stable toolchain installed, RUSTC_BOOTSTRAP=1 lets the
# stable compiler accept them; a nightly toolchain works too (then unset it).
#
# One libFuzzer process at a time, one worker, no forking: the default
# in-process mode is already that (`-jobs=1 -workers=1` would only add a
# child process). Inputs found are kept in fuzz/target/corpus/<target>
# (ignored by git) on top of the seeds in fuzz/corpus/<target>, which are
# only read. A crash stops that target and is saved under
# fuzz/artifacts/<target>/ (reproduce: `cargo fuzz run <target> <file>`);
# the script goes on with the next target and exits 1 at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [SECONDS]   (whole seconds per target, default 60)" >&2
    exit 2
fi
targets=(${FUZZ_TARGETS:-client_hello proxy_protocol jwt xfcc config routes})
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

# Largest input per target: a little over the biggest real input.
max_len() {
    case "$1" in
        client_hello) echo 8192 ;;   # real hellos are 0.2-2 KiB
        proxy_protocol) echo 4096 ;; # a header is at most 2064 bytes
        jwt) echo 8192 ;;            # the default token cap
        xfcc) echo 4096 ;;           # a leaf certificate
        config) echo 16384 ;;        # the example config is 8 KiB
        routes) echo 1024 ;;
        *) echo 4096 ;;
    esac
}

# Build every target first, then run the binaries: the runs then fuzz one
# snapshot of the tree, even if files change while they go on.
echo "== building ${#targets[@]} targets (sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
    cargo fuzz build -s "$sanitizer" "$t"
done
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="fuzz/target/$triple/release"

logs=fuzz/target/logs
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    work="fuzz/target/corpus/$t"
    mkdir -p "$work" "fuzz/corpus/$t"
    log="$logs/$t.log"
    echo "== $t: ${seconds}s (log: $log)"
    rc=0
    start=$(date +%s)
    mkdir -p "fuzz/artifacts/$t"
    "$bin_dir/$t" "$work" "fuzz/corpus/$t" \
        -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$(max_len "$t")" -print_final_stats=1 >"$log" 2>&1 || rc=$?
    took=$(($(date +%s) - start))
    stat() { grep -m1 "^stat::$1:" "$log" | awk '{print $2}'; }
    execs="$(stat number_of_executed_units || true)"
    rate="$(stat average_exec_per_sec || true)"
    cov="$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+' || true)"
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        grep -E "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -5 || true
        result="FAILED (rc $rc)"
    else
        result="ok"
    fi
    summary+=("$(printf '%-15s %6ss %12s execs %8s/s  %-9s %s' \
        "$t" "$took" "${execs:-?}" "${rate:-?}" "${cov:-}" "$result")")
    echo "${summary[-1]}"
done

echo
echo "== summary (libFuzzer final stats)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
