#!/usr/bin/env bash
# Full-handshake rate and proxy CPU per handshake with client-certificate
# revocation checks, side by side in one run (issue 15, item 6):
#   none    mTLS only (load-tests/conf/ztgate-mtls.yaml.in)
#   crl     + listener.tls.crl: a CRL of 10,000 revoked serials
#   ocsp    + listener.tls.ocsp: { mode: hard }, answers cached (warm)
# Each connection is a full TLS 1.3 mTLS handshake plus one unary call
# (`ztgate-loadgen handshake --no-resumption`). The variants alternate over
# --rounds rounds so drift on a shared machine hits all of them alike; the
# report gives each variant's median and its ratio to `none`.
#
# The PKI is made with the openssl CLI: a CA, a server cert, the client's
# X.509-SVID naming the OCSP responder in its AIA, a delegated OCSP signer,
# and an index of 10,000 revoked serials (+ the client, valid) from which
# `openssl ca -gencrl` makes the CRL and `openssl ocsp` answers. The
# responder is OpenSSL's own, run per request (`-reqin`/`-respout`) behind a
# small HTTP front bound to 127.0.0.1 (its `-port` mode binds every
# interface).
#
# usage: load-tests/revocation.sh [--rounds N] [--duration D] [--parallel N]
#                                 [--proxy-cores LIST] [--load-cores LIST] [--out DIR]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
NCPU=$(nproc)
PROXY_CORES=$((NCPU - 1))
LOAD_CORES=$([ "$NCPU" -gt 1 ] && echo "0-$((NCPU - 2))" || echo 0)
ROUNDS=3
DURATION=5s
PARALLEL=16
REVOKED=10000
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --parallel) PARALLEL=$2; shift ;;
        --proxy-cores) PROXY_CORES=$2; shift ;;
        --load-cores) LOAD_CORES=$2; shift ;;
        --revoked) REVOKED=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
OUT=$(realpath -m "${OUT:-$HERE/results/$(date +%F)-revocation}")
WORK=$OUT/work
rm -rf "$WORK" "$OUT/runs"
mkdir -p "$WORK" "$OUT/runs"
log() { printf '\n== %s\n' "$*" >&2; }

TD=${CARGO_TARGET_DIR:-$ROOT/target}
log "building (release) into $TD"
(cd "$ROOT" && cargo build --release -p ztgate -p ztgate-loadtest)
ZTGATE=$TD/release/ztgate
LOADGEN=$TD/release/ztgate-loadgen
BENCHD=$TD/release/ztgate-benchd

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); ADMIN=$(free_port); BACKEND_PORT=$(free_port); OCSP_PORT=$(free_port)

# ---- PKI ------------------------------------------------------------------------
log "PKI, $REVOKED revoked serials, CRL"
cd "$WORK"
EC=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${EC[@]}" -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=bench-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
leaf() { # name subject serial extensions
    openssl req -new "${EC[@]}" -keyout "$1-key.pem" -out "$1.csr" -subj "$2" 2>/dev/null
    printf '%b' "$4" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -set_serial "$3" -days 2 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
leaf server /CN=localhost 0x100 "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"
leaf client /CN=bench 0x101 "subjectAltName=URI:spiffe://acme.test/ns/shop/sa/bench\nextendedKeyUsage=clientAuth\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:$OCSP_PORT/\n"
leaf responder /CN=bench-ocsp 0x102 "extendedKeyUsage=OCSPSigning\n"
# The CA database: the client valid, $REVOKED other serials revoked.
python3 - "$REVOKED" <<'PY'
import sys
n = int(sys.argv[1])
with open("index.txt", "w") as f:
    f.write("V\t300101000000Z\t\t0101\tunknown\t/CN=bench\n")
    for i in range(n):
        f.write(f"R\t300101000000Z\t251201000000Z\t{0x10000 + i:06X}\tunknown\t/CN=revoked-{i}\n")
PY
printf '1000\n' >crlnumber
cat >ca.cnf <<CNF
[ ca ]
default_ca = bench
[ bench ]
database = $WORK/index.txt
crlnumber = $WORK/crlnumber
default_md = sha256
default_crl_days = 1
CNF
openssl ca -config ca.cnf -gencrl -keyfile ca-key.pem -cert ca.pem -out crl.pem 2>/dev/null
echo "- CRL: $(openssl crl -in crl.pem -noout -text | grep -c 'Serial Number') revoked serials, $(stat -c %s crl.pem) bytes PEM" >"$OUT/machine.md"

# ---- peers ----------------------------------------------------------------------
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

cat >ocsp_front.py <<'PY'
# OpenSSL's OCSP responder, one process per request, behind HTTP on 127.0.0.1.
import http.server, subprocess, sys, tempfile, os
work, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with tempfile.TemporaryDirectory() as d:
            req, resp = os.path.join(d, "req.der"), os.path.join(d, "resp.der")
            open(req, "wb").write(body)
            subprocess.run(["openssl", "ocsp", "-index", f"{work}/index.txt", "-CA", f"{work}/ca.pem",
                            "-rsigner", f"{work}/responder.pem", "-rkey", f"{work}/responder-key.pem",
                            "-nmin", "60", "-reqin", req, "-respout", resp], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            data = open(resp, "rb").read()
        self.send_response(200)
        self.send_header("content-type", "application/ocsp-response")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        with open(f"{work}/ocsp-requests.log", "a") as f:
            f.write("request\n")
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
PY
python3 ocsp_front.py "$WORK" "$OCSP_PORT" &
PIDS+=("$!")
taskset -c "$LOAD_CORES" "$BENCHD" --listen "127.0.0.1:$BACKEND_PORT" --threads 1 &
PIDS+=("$!")
wait_port "$OCSP_PORT" && wait_port "$BACKEND_PORT" || { echo "peers did not start" >&2; exit 1; }

# ---- configs --------------------------------------------------------------------
render() { # variant
    sed -e "s#@WORK@#$WORK#g" -e "s#@PORT@#$PORT#g" -e "s#@ADMIN_PORT@#$ADMIN#g" \
        -e "s#@BACKEND_PORT@#$BACKEND_PORT#g" -e "s#@THREADS@#1#g" \
        -e "s#ztgate-mtls\.#ztgate-$1.#g" "$HERE/conf/ztgate-mtls.yaml.in" >"$1.yaml"
    case "$1" in
        crl) sed -i "s#^    client_auth: require#    client_auth: require\n    crl: [$WORK/crl.pem]#" "$1.yaml" ;;
        ocsp) sed -i "s#^    client_auth: require#    client_auth: require\n    ocsp: { mode: hard, timeout: 2s }#" "$1.yaml" ;;
    esac
    "$ZTGATE" check -c "$1.yaml" >"$1-check.log" 2>&1 || { cat "$1-check.log" >&2; exit 1; }
}
VARIANTS=(none crl ocsp)
for v in "${VARIANTS[@]}"; do render "$v"; done

TLS=(--ca "$WORK/ca.pem" --cert "$WORK/client.pem" --key "$WORK/client-key.pem" --server-name localhost)
for r in $(seq 1 "$ROUNDS"); do
    for v in "${VARIANTS[@]}"; do
        log "round $r: $v"
        taskset -c "$PROXY_CORES" "$ZTGATE" run -c "$v.yaml" >"$v-$r.log" 2>&1 &
        pid=$!; PIDS+=("$pid")
        wait_port "$PORT" || { echo "ztgate ($v) did not start: see $WORK/$v-$r.log" >&2; exit 1; }
        taskset -c "$LOAD_CORES" "$LOADGEN" handshake --addr "127.0.0.1:$PORT" --target "$v" "${TLS[@]}" \
            --no-resumption --parallel "$PARALLEL" --warmup 1s --duration "$DURATION" \
            --watch-pid "$pid" --clk-tck "$(getconf CLK_TCK)" --out "$OUT/runs/$r-$v.json"
        # What the gateway says it checked: OCSP answers by result and
        # source, the CRL in force.
        curl -s "http://127.0.0.1:$ADMIN/metrics" | grep -E '^ztgate_(ocsp_checks_total|crl_next_update)' \
            >"$WORK/metrics-$v-$r.txt" || true
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
done

# ---- report ---------------------------------------------------------------------
python3 - "$OUT" "${VARIANTS[@]}" <<'PY'
import json, glob, os, statistics, sys
out, variants = sys.argv[1], sys.argv[2:]
rows = {}
for v in variants:
    runs = [json.load(open(p))["result"] for p in sorted(glob.glob(f"{out}/runs/*-{v}.json"))]
    rate = [r["per_second"] for r in runs]
    cpu = [r["proxy_cpu_us_per_conn"] for r in runs if r.get("proxy_cpu_us_per_conn")]
    errors = sum(r["errors"] for r in runs)
    rows[v] = (statistics.median(rate), statistics.median(cpu) if cpu else float("nan"), rate, cpu, errors)
base_rate, base_cpu = rows[variants[0]][0], rows[variants[0]][1]
requests = 0
if os.path.exists(f"{out}/work/ocsp-requests.log"):
    requests = sum(1 for _ in open(f"{out}/work/ocsp-requests.log"))
with open(f"{out}/report.md", "w") as f:
    f.write("# Client-certificate revocation: full-handshake rate and proxy CPU per handshake\n\n")
    f.write(open(f"{out}/machine.md").read())
    f.write(f"- {len(rows[variants[0]][2])} alternating rounds per variant; each connection a full TLS 1.3 mTLS handshake + one unary call; ztgate release, 1 worker thread, pinned\n")
    f.write(f"- OCSP responder requests over the whole run: {requests} (cache warm after the first handshake of each ztgate start)\n")
    for v in variants[1:]:
        checked = list(dict.fromkeys(
            l.strip() for p in sorted(glob.glob(f"{out}/work/metrics-{v}-*.txt")) for l in open(p)
            if not l.rstrip().endswith(" 0")))
        f.write(f"- `{v}`: what the gateway reported at the end of each run: {'; '.join(f'`{c}`' for c in checked) or 'nothing'}\n")
    f.write("\n")
    f.write("| variant | handshakes/s (median) | × none | proxy CPU µs/handshake (median) | × none | errors | runs (rate; CPU µs) |\n|---|---:|---:|---:|---:|---:|---|\n")
    for v in variants:
        rate, cpu, rates, cpus, errors = rows[v]
        f.write(f"| {v} | {rate:.0f} | {rate / base_rate:.2f} | {cpu:.0f} | {cpu / base_cpu:.2f} | {errors} | {', '.join(f'{x:.0f}' for x in rates)}; {', '.join(f'{x:.0f}' for x in cpus)} |\n")
print(open(f"{out}/report.md").read())
PY
