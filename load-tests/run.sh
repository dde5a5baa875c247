#!/usr/bin/env bash
# One run of the ztgate side-by-side benchmark. See load-tests/README.md.
#
# Builds once (release), makes a throw-away PKI and JWT keys, starts the
# benchmark backend, then measures the same workload through each target:
#   direct        generator -> backend (h2c)
#   ztgate-full   mTLS + SPIFFE + JWT RS256 (cache) + device/GeoIP + scope routing
#   ztgate-miss   the same, a fresh token on every call (cache misses), RS256 and ES256
#   ztgate-mtls   mTLS pass-through
#   ztgate-state-memory, ztgate-state-redis
#                 ztgate-full + a rate-limit rule on every call + DPoP (fresh
#                 proof per call), state.backend memory vs redis (its own
#                 redis-server, Redis commands and read events per call)
#   haproxy-mtls  HAProxy 2.6 mTLS pass-through
#   haproxy-jwt   HAProxy 2.6 mTLS + jwt_verify RS256 + scope ACL routing
#   nginx         nginx mTLS + grpc_pass
# The proxy is pinned to --proxy-cores, generator and backend to --load-cores.
#
# --callgrind N replaces the timed runs with a deterministic measure: each
# proxy runs under valgrind's callgrind with instrumentation off, the
# generator makes warm-up calls, then switches instrumentation on for exactly
# N calls (per round) and off again (`ztgate-loadgen count`); the report,
# callgrind.md, gives instructions per call and where they go.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

NCPU=$(nproc)
PROXY_CORES=$((NCPU - 1))
LOAD_CORES=$([ "$NCPU" -gt 1 ] && echo "0-$((NCPU - 2))" || echo 0)
PROXY_THREADS=1
GEN_THREADS=1
BACKEND_THREADS=1
CONNECTIONS=4
STREAMS=16
PAYLOAD=64
METHOD=get
WARMUP=3s
DURATION=10s
UNLOADED_DURATION=5s
TARGETS="selftest,direct,ztgate-full,ztgate-miss-rs256,ztgate-miss-es256,ztgate-mtls,ztgate-state-memory,ztgate-state-redis,haproxy-mtls,haproxy-jwt,nginx"
SCALE=1
SCALE_CONNECTIONS=10000
OUT=""
MINT_COUNT=""
CALLGRIND=0
CALLGRIND_WARMUP=1000
CALLGRIND_ROUNDS=2
ZTGATE_BIN=""
UPSTREAM_MAX_STREAMS=1000

usage() {
    cat <<USAGE
usage: $0 [options]
  --proxy-cores LIST      cpus for the proxy (taskset list, default $PROXY_CORES)
  --load-cores LIST       cpus for generator + backend (default $LOAD_CORES)
  --proxy-threads N       proxy worker threads (default $PROXY_THREADS)
  --gen-threads N         generator threads (default $GEN_THREADS)
  --backend-threads N     backend threads (default $BACKEND_THREADS)
  --connections N         HTTP/2 connections (default $CONNECTIONS)
  --streams M             concurrent streams per connection (default $STREAMS)
  --payload BYTES         request payload (default $PAYLOAD)
  --method get|watch      unary Get or server-streaming Watch (default $METHOD)
  --warmup D --duration D warm-up and measured window (default $WARMUP, $DURATION)
  --targets LIST          comma list (default: $TARGETS)
  --no-scale              skip the idle-connection and handshake-rate modes
  --scale-connections N   idle connections to hold (default $SCALE_CONNECTIONS)
  --mint-count N          tokens minted for the cache-miss runs
  --quick                 short smoke run (1s warm-up, 3s windows, 1000 idle connections)
  --out DIR               results folder (default load-tests/results/<date>,
                          with --callgrind load-tests/results/<date>-callgrind)
  --callgrind N           instructions per call instead of the timed runs: every proxy
                          target under callgrind, instrumentation on for exactly N calls
                          (connections x streams, closed loop) after the warm-up calls
  --callgrind-warmup W    uninstrumented calls first (default $CALLGRIND_WARMUP)
  --callgrind-rounds R    measured rounds per target, one dump each (default $CALLGRIND_ROUNDS)
  --upstream-max-streams N  ztgate's upstreams.*.max_streams_per_connection (default
                          $UPSTREAM_MAX_STREAMS; 1 = one backend connection per concurrent call)
  --ztgate-bin PATH       measure this ztgate binary instead of building one (a before/after
                          pair: keep the "before" build, run once with each)
USAGE
}

while [ $# -gt 0 ]; do
    case "$1" in
        --proxy-cores) PROXY_CORES=$2; shift ;;
        --load-cores) LOAD_CORES=$2; shift ;;
        --proxy-threads) PROXY_THREADS=$2; shift ;;
        --gen-threads) GEN_THREADS=$2; shift ;;
        --backend-threads) BACKEND_THREADS=$2; shift ;;
        --connections) CONNECTIONS=$2; shift ;;
        --streams) STREAMS=$2; shift ;;
        --payload) PAYLOAD=$2; shift ;;
        --method) METHOD=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --targets) TARGETS=$2; shift ;;
        --no-scale) SCALE=0 ;;
        --scale-connections) SCALE_CONNECTIONS=$2; shift ;;
        --mint-count) MINT_COUNT=$2; shift ;;
        --quick) WARMUP=1s; DURATION=3s; UNLOADED_DURATION=2s; SCALE_CONNECTIONS=1000 ;;
        --out) OUT=$2; shift ;;
        --callgrind) CALLGRIND=$2; shift ;;
        --callgrind-warmup) CALLGRIND_WARMUP=$2; shift ;;
        --callgrind-rounds) CALLGRIND_ROUNDS=$2; shift ;;
        --ztgate-bin) ZTGATE_BIN=$2; shift ;;
        --upstream-max-streams) UPSTREAM_MAX_STREAMS=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

for n in "$CALLGRIND" "$CALLGRIND_WARMUP" "$CALLGRIND_ROUNDS" "$UPSTREAM_MAX_STREAMS"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "--callgrind, --callgrind-warmup, --callgrind-rounds and --upstream-max-streams take a number, not '$n'" >&2; exit 2; }
done
[ "$CALLGRIND" = 0 ] || [ "$CALLGRIND_ROUNDS" -ge 1 ] || { echo "--callgrind-rounds must be at least 1" >&2; exit 2; }

want() { [[ ",$TARGETS," == *",$1,"* ]]; }
log() { printf '\n== %s\n' "$*" >&2; }

if [ "$CALLGRIND" != 0 ]; then
    # No proxy to count in the generator's ceiling and the direct path;
    # the connection-scale modes are about memory and handshakes, not calls.
    SCALE=0
    OUT=${OUT:-$HERE/results/$(date +%F)-callgrind}
else
    OUT=${OUT:-$HERE/results/$(date +%F)}
fi
# Absolute: the generated configs name their files under it, and ztgate
# resolves relative paths against the config's own folder.
OUT=$(realpath -m "$OUT")
WORK=$OUT/work
rm -rf "$OUT/runs" "$OUT/scale" "$OUT/callgrind" "$WORK"
mkdir -p "$OUT/runs" "$OUT/scale" "$WORK/nginx-tmp"
[ "$CALLGRIND" = 0 ] || mkdir -p "$OUT/callgrind"
: >"$OUT/skipped.md"
skip() { echo "- **$1**: $2" | tee -a "$OUT/skipped.md" >&2; }

# ---- build (once) -----------------------------------------------------------
TD=${CARGO_TARGET_DIR:-$ROOT/target}
log "building (release) into $TD"
(cd "$ROOT" && cargo build --release -p ztgate-loadtest)
LOADGEN=$TD/release/ztgate-loadgen
BENCHD=$TD/release/ztgate-benchd
ZTGATE=""
if want ztgate-full || want ztgate-mtls || want ztgate-miss-rs256 || want ztgate-miss-es256 ||
    want ztgate-state-memory || want ztgate-state-redis; then
    if [ -n "$ZTGATE_BIN" ]; then
        [ -x "$ZTGATE_BIN" ] || { echo "--ztgate-bin $ZTGATE_BIN is not an executable" >&2; exit 2; }
        ZTGATE=$(realpath "$ZTGATE_BIN")
    elif (cd "$ROOT" && cargo build --release -p ztgate) >"$WORK/ztgate-build.log" 2>&1 && [ -x "$TD/release/ztgate" ]; then
        ZTGATE=$TD/release/ztgate
    else
        skip "ztgate targets" "\`cargo build --release -p ztgate\` failed or made no binary (see work/ztgate-build.log)"
    fi
fi

# ---- peers --------------------------------------------------------------------
install_pkg() {
    command -v "$1" >/dev/null && return 0
    log "installing $2"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    fi
}
if want haproxy-mtls || want haproxy-jwt; then install_pkg haproxy haproxy || skip haproxy "apt-get install haproxy failed"; fi
if want nginx; then install_pkg nginx nginx-light || skip nginx "apt-get install nginx-light failed"; fi
if want ztgate-state-redis; then install_pkg redis-server redis-server || skip ztgate-state-redis "apt-get install redis-server failed"; fi
if [ "$CALLGRIND" != 0 ]; then
    install_pkg valgrind valgrind || { echo "--callgrind needs valgrind (apt-get install valgrind failed)" >&2; exit 1; }
    command -v callgrind_control >/dev/null || { echo "--callgrind needs callgrind_control (valgrind)" >&2; exit 1; }
fi

# ---- PKI, keys, tokens ----------------------------------------------------------
ISS=https://idp.bench.test
AUD=orders
SCOPE="orders.read orders.write"
log "PKI and tokens in $WORK"
"$LOADGEN" pki --dir "$WORK"
cat "$WORK/server.pem" "$WORK/server-key.pem" >"$WORK/server-combined.pem"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/jwt-rs256.pem" 2>/dev/null
openssl pkey -in "$WORK/jwt-rs256.pem" -pubout -out "$WORK/jwt-rs256.pub.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/jwt-es256.pem" 2>/dev/null
CLAIMS=(--mint-iss "$ISS" --mint-aud "$AUD" --mint-scope "$SCOPE")
"$LOADGEN" jwks --mint-key "$WORK/jwt-rs256.pem" --mint-alg RS256 --mint-kid rs1 "${CLAIMS[@]}" --out "$WORK/jwks-rs.json"
"$LOADGEN" jwks --mint-key "$WORK/jwt-es256.pem" --mint-alg ES256 --mint-kid es1 "${CLAIMS[@]}" --out "$WORK/jwks-es.json"
python3 - "$WORK" <<'PY' 2>/dev/null || jq -s '{keys: (.[0].keys + .[1].keys)}' "$WORK/jwks-rs.json" "$WORK/jwks-es.json" >"$WORK/jwks.json"
import json, sys
w = sys.argv[1]
keys = json.load(open(f"{w}/jwks-rs.json"))["keys"] + json.load(open(f"{w}/jwks-es.json"))["keys"]
json.dump({"keys": keys}, open(f"{w}/jwks.json", "w"))
PY
"$LOADGEN" mint --mint-key "$WORK/jwt-rs256.pem" --mint-alg RS256 --mint-kid rs1 "${CLAIMS[@]}" --mint-lifetime 6h --count 1 --out "$WORK/token-rs256.txt"
# DPoP (state targets): the client's proof key, and the same RS256 token
# bound to it (cnf.jkt = its RFC 7638 thumbprint).
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/dpop-client.pem" 2>/dev/null
"$LOADGEN" mint --mint-key "$WORK/jwt-rs256.pem" --mint-alg RS256 --mint-kid rs1 "${CLAIMS[@]}" --mint-lifetime 6h \
    --mint-cnf-key "$WORK/dpop-client.pem" --count 1 --out "$WORK/token-dpop.txt"
TESTDATA=${ZTGATE_TESTDATA:-$ROOT/../shared/testdata}
DEVICE_SECRET=$(openssl rand -hex 32)

render() { # template out port admin_port
    sed -e "s#@WORK@#$WORK#g" -e "s#@PORT@#$3#g" -e "s#@ADMIN_PORT@#${4:-0}#g" \
        -e "s#@BACKEND_PORT@#$BACKEND_PORT#g" -e "s#@THREADS@#$PROXY_THREADS#g" \
        -e "s#@ISS@#$ISS#g" -e "s#@AUD@#$AUD#g" -e "s#@TESTDATA@#$TESTDATA#g" \
        -e "s#@DEVICE_SECRET@#$DEVICE_SECRET#g" -e "s#@CACHE_CAPACITY@#${CACHE_CAPACITY:-100000}#g" \
        -e "s#@DPOP@#${DPOP:-off}#g" -e "s#@RATELIMIT_STAGE@#${RATELIMIT_STAGE:-}#g" \
        -e "s#@STATE_BACKEND@#${STATE_BACKEND:-memory}#g" -e "s#@REDIS_PORT@#$REDIS_PORT#g" \
        -e "s#@UPSTREAM_MAX_STREAMS@#$UPSTREAM_MAX_STREAMS#g" \
        "$1" >"$2"
}

BACKEND_PORT=50151
REDIS_PORT=6391
CLK_TCK=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- process helpers ----------------------------------------------------------
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Under callgrind a proxy takes tens of seconds to start (valgrind reads
# the executable's debug info and translates the start-up code).
WAIT_TRIES=$([ "$CALLGRIND" = 0 ] && echo 100 || echo 3000)
wait_port() { # port
    for _ in $(seq 1 "$WAIT_TRIES"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
stop() {
    if [ "$CALLGRIND" != 0 ]; then
        # Its dumps are written; a graceful shutdown under valgrind only costs
        # time. vgdb's FIFOs of a killed valgrind stay behind: remove them.
        kill -KILL "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
        rm -f "${TMPDIR:-/tmp}"/vgdb-pipe-*-"$1"-by-* 2>/dev/null || true
        return 0
    fi
    kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
}

# The proxy's command prefix: nothing, or callgrind with instrumentation
# off until the generator switches it on (`ztgate-loadgen count`).
VG=()
under_callgrind() { # name
    VG=()
    [ "$CALLGRIND" = 0 ] && return 0
    VG=(valgrind --tool=callgrind --instr-atstart=no
        "--callgrind-out-file=$OUT/callgrind/$1.out" "--log-file=$WORK/$1.valgrind.log")
}

# Foreground only: a function run with `&` would be a subshell, and $! would
# name the subshell instead of the process to watch and stop.
on_load() { taskset -c "$LOAD_CORES" "$@"; }

GEN=(--threads "$GEN_THREADS")
WORKLOAD=(--method "$METHOD" --payload "$PAYLOAD" --warmup "$WARMUP" --duration "$DURATION")
TLS=(--ca "$WORK/ca.pem" --cert "$WORK/client.pem" --key "$WORK/client-key.pem" --server-name localhost)
# A counted run needs one fresh token per call (warm-up included); the
# pool never wraps, so every call of a cache-miss target verifies.
[ "$CALLGRIND" = 0 ] || MINT_COUNT=${MINT_COUNT:-$((CALLGRIND_WARMUP + CALLGRIND * CALLGRIND_ROUNDS))}
MINT_COUNT=${MINT_COUNT:-40000}

# count NAME ADDR PID EXTRA... : the callgrind mode's measure of one proxy
count() {
    local name=$1 addr=$2 pid=$3; shift 3
    # Redis's INFO sampling belongs to the timed runs: drop its option.
    local extra=()
    while [ $# -gt 0 ]; do
        if [ "$1" = --redis-stats ]; then shift 2; continue; fi
        extra+=("$1"); shift
    done
    set -- "${extra[@]}"
    log "$name: $CALLGRIND_WARMUP warm-up calls, then $CALLGRIND_ROUNDS x $CALLGRIND calls under callgrind ($CONNECTIONS x $STREAMS)"
    on_load "$LOADGEN" count --addr "$addr" --target "$name" "${GEN[@]}" --method "$METHOD" \
        --payload "$PAYLOAD" --connections "$CONNECTIONS" --streams "$STREAMS" \
        --warmup-calls "$CALLGRIND_WARMUP" --calls "$CALLGRIND" --rounds "$CALLGRIND_ROUNDS" \
        --callgrind-pid "$pid" --callgrind-out "$OUT/callgrind/$name.out" \
        "$@" --out "$OUT/callgrind/$name.json" ||
        skip "$name" "counted run failed or invalid (see callgrind/$name.json)"
}

# measure NAME ADDR PIDS EXTRA... : loaded run, then unloaded run
# (--callgrind: the counted run instead)
measure() {
    local name=$1 addr=$2 pids=$3; shift 3
    if [ "$CALLGRIND" != 0 ]; then
        count "$name" "$addr" "$pids" "$@"
        return 0
    fi
    local watch=()
    for p in $pids; do watch+=(--watch-pid "$p"); done
    log "$name: loaded ($CONNECTIONS x $STREAMS)"
    on_load "$LOADGEN" run --addr "$addr" --target "$name" "${GEN[@]}" "${WORKLOAD[@]}" \
        --connections "$CONNECTIONS" --streams "$STREAMS" --group loaded \
        --clk-tck "$CLK_TCK" "${watch[@]}" "$@" --out "$OUT/runs/1-$name.json" ||
        skip "$name" "loaded run failed"
    log "$name: unloaded (1 x 1)"
    on_load "$LOADGEN" run --addr "$addr" --target "$name" "${GEN[@]}" --method "$METHOD" \
        --payload "$PAYLOAD" --warmup 1s --duration "$UNLOADED_DURATION" \
        --connections 1 --streams 1 --group unloaded \
        --clk-tck "$CLK_TCK" "${watch[@]}" "$@" --out "$OUT/runs/2-$name.json" ||
        skip "$name (unloaded)" "run failed"
}

# scale NAME ADDR PIDS EXTRA... : idle connections, then handshake rates
scale() {
    local name=$1 addr=$2 pids=$3; shift 3
    [ "$SCALE" = 1 ] || return 0
    local watch=()
    for p in $pids; do watch+=(--watch-pid "$p"); done
    log "$name: holding $SCALE_CONNECTIONS idle connections"
    on_load "$LOADGEN" hold --addr "$addr" --target "$name" "${TLS[@]}" "${watch[@]}" "$@" \
        --connections "$SCALE_CONNECTIONS" --out "$OUT/scale/1-$name-hold.json" ||
        skip "$name (hold)" "failed"
    log "$name: handshake rate (full, resumed)"
    on_load "$LOADGEN" handshake --addr "$addr" --target "$name-full" "${TLS[@]}" --no-resumption \
        --clk-tck "$CLK_TCK" "${watch[@]}" "$@" --out "$OUT/scale/2-$name-full.json" ||
        skip "$name (handshakes)" "failed"
    on_load "$LOADGEN" handshake --addr "$addr" --target "$name-resumed" "${TLS[@]}" \
        --clk-tck "$CLK_TCK" "${watch[@]}" "$@" --out "$OUT/scale/3-$name-resumed.json" ||
        skip "$name (resumed handshakes)" "failed"
}

# ---- machine ----------------------------------------------------------------------
{
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $NCPU cores online; kernel $(uname -r)"
    echo "- proxy on cpus \`$PROXY_CORES\` with $PROXY_THREADS thread(s); generator ($GEN_THREADS thread(s)) and backend ($BACKEND_THREADS thread(s)) on cpus \`$LOAD_CORES\`"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews RPS and latency more than CPU µs/call)"
    command -v haproxy >/dev/null && echo "- $(haproxy -v | head -1 | cut -d' ' -f1-3)"
    command -v nginx >/dev/null && echo "- $(nginx -v 2>&1)"
    # ZTGATE_REV names the source when the tree is not a git checkout (an export).
    if [ -n "$ZTGATE" ]; then
        if [ -n "${ZTGATE_REV:-}" ]; then
            echo "- ztgate $ZTGATE_REV"
        elif [ -n "$ZTGATE_BIN" ]; then
            echo "- ztgate: the prebuilt \`$ZTGATE\` (--ztgate-bin; set ZTGATE_REV to name its source)"
        elif rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null); then
            (cd "$ROOT" && git diff --quiet HEAD -- . ':!load-tests') || rev="$rev (+ uncommitted changes outside load-tests/)"
            echo "- ztgate $rev"
        else
            echo "- ztgate (source not a git checkout; set ZTGATE_REV)"
        fi
    fi
    want ztgate-state-redis && command -v redis-server >/dev/null && echo "- $(redis-server --version | cut -d' ' -f1-3), on cpus \`$LOAD_CORES\`"
    if [ "$CALLGRIND" != 0 ]; then
        echo "- $(valgrind --version); proxies under \`valgrind --tool=callgrind --instr-atstart=no\`"
        echo "- $(date -u +%FT%TZ); \`load-tests/run.sh --callgrind $CALLGRIND --callgrind-warmup $CALLGRIND_WARMUP --callgrind-rounds $CALLGRIND_ROUNDS --connections $CONNECTIONS --streams $STREAMS --payload $PAYLOAD --method $METHOD --proxy-threads $PROXY_THREADS --targets $TARGETS\`"
    else
        echo "- $(date -u +%FT%TZ); \`load-tests/run.sh --connections $CONNECTIONS --streams $STREAMS --payload $PAYLOAD --method $METHOD --duration $DURATION --targets $TARGETS$([ "$SCALE" = 1 ] || echo ' --no-scale')\`"
    fi
} >"$OUT/machine.md"

# ---- generator ceiling --------------------------------------------------------------
if want selftest && [ "$CALLGRIND" = 0 ]; then
    log "self-test: generator ceiling against the raw h2 backend on the proxy cores"
    taskset -c "$PROXY_CORES" "$BENCHD" --mode raw --listen 127.0.0.1:50150 --threads "$PROXY_THREADS" &
    RAW=$!; PIDS+=("$RAW")
    wait_port 50150
    on_load "$LOADGEN" run --addr 127.0.0.1:50150 --target generator-ceiling "${GEN[@]}" "${WORKLOAD[@]}" \
        --connections "$CONNECTIONS" --streams "$STREAMS" --group "generator ceiling" \
        --out "$OUT/runs/0-generator-ceiling.json" || skip selftest "failed"
    stop "$RAW"
fi

# ---- backend --------------------------------------------------------------------------
# A port already taken (a leftover backend or proxy) would silently measure
# something else: refuse to start instead.
for p in "$BACKEND_PORT" 8441 8442 8443 8444 9901 9902 "$REDIS_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "port $p on 127.0.0.1 is already in use; stop whatever listens there first" >&2
        exit 1
    fi
done
taskset -c "$LOAD_CORES" "$BENCHD" --listen "127.0.0.1:$BACKEND_PORT" --threads "$BACKEND_THREADS" &
BACKEND=$!; PIDS+=("$BACKEND")
wait_port "$BACKEND_PORT" || { echo "backend did not start" >&2; exit 1; }

if want direct && [ "$CALLGRIND" = 0 ]; then measure direct "127.0.0.1:$BACKEND_PORT" ""; fi

# ---- ztgate -------------------------------------------------------------------------------
# Optional environment: DPOP (the issuer's dpop mode, default off),
# RATELIMIT_STAGE (", ratelimit" to add the stage), OVERLAY (a template
# appended to the config) and STATE_BACKEND (memory | redis: keeps or drops
# the overlay's lines tagged #REDIS).
ztgate_target() { # name template port admin token-args...
    local name=$1 tmpl=$2 port=$3 admin=$4; shift 4
    local cfg=$WORK/$name.yaml
    render "$HERE/conf/$tmpl" "$cfg" "$port" "$admin"
    if [ -n "${OVERLAY:-}" ]; then
        render "$HERE/conf/$OVERLAY" "$cfg.overlay" "$port" "$admin"
        if [ "${STATE_BACKEND:-memory}" = redis ]; then
            sed -e 's/[[:space:]]*#REDIS$//' "$cfg.overlay" >>"$cfg"
        else
            sed -e '/#REDIS$/d' "$cfg.overlay" >>"$cfg"
        fi
        rm -f "$cfg.overlay"
    fi
    if ! "$ZTGATE" check -c "$cfg" >"$WORK/$name-check.log" 2>&1; then
        skip "$name" "\`ztgate check\` refused the generated config: $(head -3 "$WORK/$name-check.log" | tr '\n' ' ')"
        return 0
    fi
    under_callgrind "$name"
    taskset -c "$PROXY_CORES" "${VG[@]}" "$ZTGATE" run -c "$cfg" >"$WORK/$name.log" 2>&1 &
    local pid=$!; PIDS+=("$pid")
    if ! wait_port "$port"; then
        skip "$name" "ztgate did not listen on $port (see work/$name.log)"
        stop "$pid"; return 0
    fi
    measure "$name" "127.0.0.1:$port" "$pid" "${TLS[@]}" "$@"
    if [ "$name" = ztgate-mtls ]; then scale ztgate "127.0.0.1:$port" "$pid"; fi
    stop "$pid"
}
if [ -n "$ZTGATE" ]; then
    want ztgate-full && ztgate_target ztgate-full ztgate-full.yaml.in 8443 9901 --token-file "$WORK/token-rs256.txt"
    # The cache-miss runs reuse a pool of $MINT_COUNT tokens (RS256 signing is
    # ~1 ms each); a token cache far smaller than the pool has evicted a token
    # long before it comes round again, so every call still verifies.
    export CACHE_CAPACITY=1000
    want ztgate-miss-rs256 && ztgate_target ztgate-miss-rs256 ztgate-full.yaml.in 8443 9901 \
        --mint-key "$WORK/jwt-rs256.pem" --mint-alg RS256 --mint-kid rs1 "${CLAIMS[@]}" --mint-count "$MINT_COUNT"
    want ztgate-miss-es256 && ztgate_target ztgate-miss-es256 ztgate-full.yaml.in 8443 9901 \
        --mint-key "$WORK/jwt-es256.pem" --mint-alg ES256 --mint-kid es1 "${CLAIMS[@]}" --mint-count "$MINT_COUNT"
    unset CACHE_CAPACITY
    want ztgate-mtls && ztgate_target ztgate-mtls ztgate-mtls.yaml.in 8444 9902
    # Rate limit + DPoP on top of the full chain, state in memory or in a
    # Redis of our own (pinned with the load: it is not the proxy's CPU).
    state_target() { # memory|redis
        local backend=$1 name=ztgate-state-$1 redis_pid="" extra=()
        if [ "$backend" = redis ]; then
            if ! command -v redis-server >/dev/null; then
                skip "$name" "no redis-server"; return 0
            fi
            taskset -c "$LOAD_CORES" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
                --save "" --appendonly no --logfile "$WORK/redis.log" &
            redis_pid=$!; PIDS+=("$redis_pid")
            if ! wait_port "$REDIS_PORT"; then
                skip "$name" "redis-server did not listen on $REDIS_PORT (see work/redis.log)"
                stop "$redis_pid"; return 0
            fi
            extra=(--redis-stats "127.0.0.1:$REDIS_PORT")
        fi
        DPOP=require RATELIMIT_STAGE=", ratelimit" OVERLAY=ztgate-state.yaml.in STATE_BACKEND=$backend \
            ztgate_target "$name" ztgate-full.yaml.in 8443 9901 \
            --token-file "$WORK/token-dpop.txt" --dpop-key "$WORK/dpop-client.pem" "${extra[@]}"
        if [ -n "$redis_pid" ]; then stop "$redis_pid"; fi
    }
    want ztgate-state-memory && state_target memory
    want ztgate-state-redis && state_target redis
fi

# ---- HAProxy ----------------------------------------------------------------------------------
haproxy_target() { # name variant(jwt|mtls) token-args...
    local name=$1 variant=$2; shift 2
    local cfg=$WORK/$name.cfg
    render "$HERE/conf/haproxy.cfg.in" "$cfg.tmp" 8441
    # HAProxy refuses to start when maxconn needs more fds than ulimit-n
    # (about 2 per connection), and ulimit -Hn may not be raisable here.
    local maxconn=$(( ($(ulimit -n) - 200) / 2 )); [ "$maxconn" -gt 10500 ] && maxconn=10500
    local ulimit_n
    ulimit_n=$(ulimit -n)
    # valgrind keeps the top file descriptors for itself and refuses to
    # raise the limit: no idle connections to hold in this mode anyway.
    if [ "$CALLGRIND" != 0 ]; then ulimit_n=1024; maxconn=400; fi
    sed -i -e "s#@ULIMIT@#$ulimit_n#g" -e "s#@MAXCONN@#$maxconn#g" "$cfg.tmp"
    if [ "$variant" = jwt ]; then
        sed -e '/#MTLS$/d' -e 's/[[:space:]]*#JWT$//' "$cfg.tmp" >"$cfg"
    else
        sed -e '/#JWT$/d' -e 's/[[:space:]]*#MTLS$//' "$cfg.tmp" >"$cfg"
    fi
    haproxy -c -f "$cfg" >"$WORK/$name-check.log" 2>&1 || { skip "$name" "haproxy -c failed: $(tail -3 "$WORK/$name-check.log" | tr '\n' ' ')"; return 0; }
    under_callgrind "$name"
    taskset -c "$PROXY_CORES" "${VG[@]}" haproxy -db -f "$cfg" >"$WORK/$name.log" 2>&1 &
    local pid=$!; PIDS+=("$pid")
    wait_port 8441 || { skip "$name" "haproxy did not start"; return 0; }
    measure "$name" 127.0.0.1:8441 "$pid" "${TLS[@]}" "$@"
    if [ "$variant" = mtls ]; then
        local keep=$SCALE_CONNECTIONS
        if [ "$SCALE" = 1 ] && [ "$keep" -gt $((maxconn - 50)) ]; then
            keep=$((maxconn - 50))
            echo "- **haproxy (hold)**: held $keep instead of $SCALE_CONNECTIONS connections: ulimit -n $(ulimit -n) caps HAProxy's maxconn at $maxconn" >>"$OUT/skipped.md"
        fi
        SCALE_CONNECTIONS=$keep scale haproxy 127.0.0.1:8441 "$pid"
    fi
    stop "$pid"
}
if command -v haproxy >/dev/null; then
    want haproxy-mtls && haproxy_target haproxy-mtls mtls
    want haproxy-jwt && haproxy_target haproxy-jwt jwt --token-file "$WORK/token-rs256.txt"
fi

# ---- nginx --------------------------------------------------------------------------------------
if want nginx && command -v nginx >/dev/null; then
    render "$HERE/conf/nginx.conf.in" "$WORK/nginx.conf" 8442
    # Under callgrind nginx runs as one process (no master, the one process
    # serves), so the traced process is the one that proxies.
    [ "$CALLGRIND" = 0 ] || sed -i -e 's/^daemon off;/daemon off;\nmaster_process off;/' "$WORK/nginx.conf"
    if nginx -t -c "$WORK/nginx.conf" -p "$WORK/" >"$WORK/nginx-check.log" 2>&1; then
        under_callgrind nginx
        taskset -c "$PROXY_CORES" "${VG[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK/" &
        NGINX=$!; PIDS+=("$NGINX")
        if wait_port 8442; then
            if [ "$CALLGRIND" = 0 ]; then
                NGINX_PIDS="$NGINX $(pgrep -P "$NGINX" | xargs)"
            else
                NGINX_PIDS=$NGINX
            fi
            measure nginx 127.0.0.1:8442 "$NGINX_PIDS" "${TLS[@]}"
            scale nginx 127.0.0.1:8442 "$NGINX_PIDS"
        else
            skip nginx "nginx did not start (see work/nginx-error.log)"
        fi
        stop "$NGINX"
    else
        skip nginx "nginx -t failed: $(tail -3 "$WORK/nginx-check.log" | tr '\n' ' ')"
    fi
fi

stop "$BACKEND"

# ---- report ---------------------------------------------------------------------------------------
log "report"
if [ "$CALLGRIND" != 0 ]; then
    # The dump callgrind writes at exit (the proxy is killed, it stays empty).
    find "$OUT/callgrind" -name '*.out' -empty -delete
    gzip -f "$OUT"/callgrind/*.out.[0-9]* 2>/dev/null || true
    "$LOADGEN" callgrind-report --dir "$OUT"
    echo "report: $OUT/callgrind.md"
    exit 0
fi
"$LOADGEN" report --dir "$OUT" --direct direct --haproxy haproxy-jwt
echo "report: $OUT/report.md"
