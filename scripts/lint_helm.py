#!/usr/bin/env python3
"""Checks of the Helm chart deploy/helm/ztgate with Helm's own engine.

Run by scripts/lint-helm.sh (which makes the virtual environment holding
helm-python-sdk, PyYAML and kubernetes-validate); see there for the steps.
Every problem is printed as `PROBLEM <case>: <what>` and the exit status is
1 when there was one.

    python3 scripts/lint_helm.py --ztgate target/debug/ztgate
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "ztgate"
CI = CHART / "ci"
DEPLOY = ROOT / "deploy"
# Kinds that come from CRDs: the Kubernetes OpenAPI schemas do not know them
# (kubernetes-validate only warns "couldn't find schema"), so they are
# checked structurally below instead.
CUSTOM_KINDS = {"ServiceMonitor", "Certificate"}
# Labels Helm's conventions add that the plain manifests leave out.
HELM_ONLY_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
}
CHECKSUM = "checksum/config"

problems: list[str] = []


def problem(case: str, msg: str) -> None:
    problems.append(f"{case}: {msg}")
    print(f"PROBLEM {case}: {msg}")


def load_values(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def render(values: dict, name: str, namespace: str) -> dict[str, str]:
    return helm.Chart.load(str(CHART)).render(values, name=name, namespace=namespace)


def objects_of(rendered: dict[str, str]) -> list[dict]:
    objs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objs.append(doc)
    return objs


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


def one(case: str, objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    if len(found) != 1:
        problem(case, f"expected one {kind}{'/' + name if name else ''}, found {len(found)}")
        return {}
    return found[0]


# --- the cases -------------------------------------------------------------

# (values file, release name, namespace, what the case must produce).
CASES = [
    ("defaults-values.yaml", "edge", "gateways", {"fullname": "edge-ztgate", "replicas": 3}),
    ("production-values.yaml", "ztgate", "edge", {
        "kinds": {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"},
        "replicas": None, "egress": True, "digest": True}),
    ("spire-values.yaml", "ztgate", "edge", {"spiffe": True, "no_listener_files": True}),
    ("redis-values.yaml", "ztgate", "edge", {"redis_env": "REDIS_PASSWORD"}),
    ("existing-configmap-values.yaml", "ztgate", "edge", {"existing_configmap": "edge-gateway-config"}),
    ("cert-manager-values.yaml", "ztgate", "edge", {"certificates": 2}),
    ("plain-manifests-values.yaml", "ztgate", "ztgate", {"plain": True}),
]


def lint_chart() -> None:
    """helm lint --strict, with the defaults and with every values file."""
    for vf in [None] + [c[0] for c in CASES]:
        case = vf or "defaults (lint)"
        values = load_values(CI / vf) if vf else None
        report = helm.lint(str(CHART), values, strict=True, namespace="edge")
        for msg in report.get("messages", []):
            # severity 1 is info (e.g. "icon is recommended"); strict makes
            # warnings (2) fail, errors (3) always do.
            if msg.get("severity", 0) >= 2:
                problem(case, f"helm lint: {msg.get('path')}: {msg.get('error')}")
        for err in report.get("errors", []):
            problem(case, f"helm lint: {err}")
        if report.get("total_charts_linted") != 1:
            problem(case, f"helm lint linted {report.get('total_charts_linted')} charts, not 1")


def cross_check(case: str, objs: list[dict], namespace: str, expect: dict) -> str | None:
    """What no schema can check; returns the ztgate.yaml text when rendered."""
    for o in objs:
        if o["metadata"].get("namespace") != namespace:
            problem(case, f"{o['kind']}/{o['metadata']['name']} is not in namespace {namespace}")

    dep = one(case, objs, "Deployment")
    if not dep:
        return None
    fullname = dep["metadata"]["name"]
    if "fullname" in expect and fullname != expect["fullname"]:
        problem(case, f"Deployment is called {fullname}, expected {expect['fullname']}")
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})

    def selects(selector: dict | None, what: str) -> None:
        if not selector or not all(pod_labels.get(k) == v for k, v in selector.items()):
            problem(case, f"{what} selector {selector} does not match the pod labels {pod_labels}")

    selects(spec["selector"].get("matchLabels"), "Deployment")
    if spec.get("replicas") != expect.get("replicas", spec.get("replicas")):
        problem(case, f"Deployment replicas {spec.get('replicas')}, expected {expect.get('replicas')}")
    [ctr] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
    for name in ("grpc", "admin"):
        if name not in ports:
            problem(case, f"container has no port named {name}")
    if expect.get("digest") and "@sha256:" not in ctr["image"]:
        problem(case, f"image {ctr['image']} is not pinned by digest")

    psc, csc = pod.get("securityContext", {}), ctr.get("securityContext", {})
    if not (psc.get("runAsNonRoot") and csc.get("runAsNonRoot")):
        problem(case, "runAsNonRoot must be set")
    if not csc.get("readOnlyRootFilesystem"):
        problem(case, "readOnlyRootFilesystem must be true")
    if csc.get("allowPrivilegeEscalation") is not False:
        problem(case, "allowPrivilegeEscalation must be false")
    if csc.get("capabilities", {}).get("drop") != ["ALL"]:
        problem(case, "capabilities must drop ALL")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem(case, "seccompProfile must be RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        problem(case, "the pod must not mount a service account token")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):
        get = ctr.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("admin", ports.get("admin")):
            problem(case, f"{probe} must GET {path} on the admin port")

    sa = pod.get("serviceAccountName")
    if not any(o["metadata"]["name"] == sa for o in by_kind(objs, "ServiceAccount")):
        problem(case, f"serviceAccountName {sa} is not rendered")

    services = {o["metadata"]["name"]: o for o in by_kind(objs, "Service")}
    for name, svc in services.items():
        selects(svc["spec"].get("selector"), f"Service/{name}")
        for p in svc["spec"].get("ports", []):
            if isinstance(p["targetPort"], str) and p["targetPort"] not in ports:
                problem(case, f"Service/{name} targets unknown port {p['targetPort']}")
    for pdb in by_kind(objs, "PodDisruptionBudget"):
        selects(pdb["spec"]["selector"].get("matchLabels"), "PodDisruptionBudget")
    for hpa in by_kind(objs, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"].get("name") != fullname:
            problem(case, "HPA does not target the Deployment")
        if "replicas" in spec:
            problem(case, "Deployment sets replicas although an HPA manages them")
    for np in by_kind(objs, "NetworkPolicy"):
        selects(np["spec"]["podSelector"].get("matchLabels"), "NetworkPolicy")
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if isinstance(p.get("port"), str) and p["port"] not in ports:
                    problem(case, f"NetworkPolicy names unknown port {p['port']}")
        if expect.get("egress") and "Egress" not in np["spec"].get("policyTypes", []):
            problem(case, "NetworkPolicy egress rules given but Egress not in policyTypes")
    for sm in by_kind(objs, "ServiceMonitor"):
        sel = sm["spec"]["selector"]["matchLabels"]
        targets = [s for s in services.values()
                   if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if len(targets) != 1:
            problem(case, f"ServiceMonitor selects {len(targets)} Services, not the metrics one")
        else:
            names = {p["name"] for p in targets[0]["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                if ep.get("port") not in names:
                    problem(case, f"ServiceMonitor endpoint port {ep.get('port')} is not a port of "
                                  f"Service/{targets[0]['metadata']['name']}")
    for kind in expect.get("kinds", ()):
        if not by_kind(objs, kind):
            problem(case, f"no {kind} rendered")

    mounts = {m["name"]: m["mountPath"] for m in ctr.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for name in mounts:
        if name not in volumes:
            problem(case, f"volumeMount {name} has no volume")
    args = ctr.get("args", [])
    cfg_path = args[args.index("-c") + 1] if "-c" in args else ""
    if cfg_path != os.path.join(mounts.get("config", "?"), "ztgate.yaml"):
        problem(case, f"args -c {cfg_path} is not ztgate.yaml in the config mount")
    cm_name = volumes.get("config", {}).get("configMap", {}).get("name")
    annotations = spec["template"]["metadata"].get("annotations") or {}

    # The Secrets projected into the tls volume, as paths in the pod.
    tls_dir = mounts.get("tls")
    projected = {}
    for src in volumes.get("tls", {}).get("projected", {}).get("sources", []):
        secret = src.get("secret", {})
        for item in secret.get("items", []):
            projected[os.path.join(tls_dir, item["path"])] = secret["name"]
    secret_names = set(projected.values())

    certs = by_kind(objs, "Certificate")
    if len(certs) != expect.get("certificates", 0):
        problem(case, f"{len(certs)} cert-manager Certificates, expected {expect.get('certificates', 0)}")
    for cert in certs:
        cs = cert["spec"]
        if cs.get("secretName") not in secret_names:
            problem(case, f"Certificate/{cert['metadata']['name']} writes {cs.get('secretName')}, "
                          "which the Deployment does not mount")
        if not cs.get("issuerRef", {}).get("name"):
            problem(case, f"Certificate/{cert['metadata']['name']} has no issuerRef.name")
        if not (cs.get("dnsNames") or cs.get("uris") or cs.get("commonName")):
            problem(case, f"Certificate/{cert['metadata']['name']} names no subject")

    env = {e["name"]: e for e in ctr.get("env", [])}
    if "redis_env" in expect:
        ref = env.get(expect["redis_env"], {}).get("valueFrom", {}).get("secretKeyRef", {})
        if not ref.get("name") or not ref.get("key"):
            problem(case, f"{expect['redis_env']} does not come from a Secret")

    if "existing_configmap" in expect:
        if by_kind(objs, "ConfigMap"):
            problem(case, "a ConfigMap is rendered although existingConfigMap is set")
        if cm_name != expect["existing_configmap"]:
            problem(case, f"config volume mounts {cm_name}, not {expect['existing_configmap']}")
        if CHECKSUM in annotations:
            problem(case, "checksum/config set for a ConfigMap the chart does not render")
        return None

    cm = one(case, objs, "ConfigMap", cm_name)
    if "ztgate.yaml" not in cm.get("data", {}):
        problem(case, f"ConfigMap {cm_name} has no ztgate.yaml")
        return None
    text = cm["data"]["ztgate.yaml"]
    cfg = yaml.safe_load(text) or {}
    if annotations.get(CHECKSUM) != hashlib.sha256(text.removesuffix("\n").encode()).hexdigest():
        problem(case, "checksum/config is not the SHA-256 of the rendered ztgate.yaml")

    def port_of(addr: str) -> int:
        return int(str(addr).rsplit(":", 1)[1])

    listener, admin = cfg.get("listener", {}), cfg.get("admin", {})
    if not str(listener.get("address", "")).startswith("0.0.0.0:") or \
            port_of(listener["address"]) != ports.get("grpc"):
        problem(case, "listener.address must be 0.0.0.0:<grpc containerPort>")
    if not str(admin.get("address", "")).startswith("0.0.0.0:") or \
            port_of(admin["address"]) != ports.get("admin"):
        problem(case, "admin.address must be 0.0.0.0:<admin containerPort>")

    # Every file the config names under the tls mount is projected.
    ltls = listener.get("tls", {})
    paths = [ltls[k] for k in ("cert", "key", "client_ca") if k in ltls]
    for up in (cfg.get("upstreams") or {}).values():
        paths += [v for k, v in (up.get("tls") or {}).items() if k in ("ca", "cert", "key")]
    for p in paths:
        if p not in projected:
            problem(case, f"config names {p}, which no mounted Secret provides")
    if expect.get("no_listener_files") and any(k in ltls for k in ("cert", "key", "client_ca")):
        problem(case, f"listener.tls names files although the Workload API supplies them: {ltls}")

    tmp = mounts.get("tmp")
    for key in ("pid_file", "upgrade_sock"):
        p = cfg.get("server", {}).get(key, "")
        if not tmp or not p.startswith(tmp + "/") or "emptyDir" not in volumes.get("tmp", {}):
            problem(case, f"server.{key} ({p}) is not on the writable emptyDir")

    def seconds(v: str) -> float:
        m = re.fullmatch(r"(\d+)(ms|s|m)", str(v))
        if not m:
            problem(case, f"cannot read duration {v!r}")
            return 0
        return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60}[m[2]]

    server = cfg.get("server", {})
    pre = ctr.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    need = pre + seconds(server.get("grace_period", "30s")) + seconds(server.get("shutdown_timeout", "5s"))
    if pre <= 0:
        problem(case, "no preStop sleep before SIGTERM")
    if pod.get("terminationGracePeriodSeconds", 30) <= need:
        problem(case, f"terminationGracePeriodSeconds <= preStop + grace_period + shutdown_timeout = {need}")

    # Every ${VAR} the config names is in the container's environment.
    for var in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
        if var not in env:
            problem(case, f"the config names ${{{var}}}, which the container's env lacks")

    workload = (cfg.get("spiffe") or {}).get("workload_api")
    if expect.get("spiffe"):
        csi = [(n, v) for n, v in volumes.items() if v.get("csi", {}).get("driver") == "csi.spiffe.io"]
        if len(csi) != 1:
            problem(case, "no csi.spiffe.io volume")
        elif not workload or not workload.startswith("unix://" + mounts.get(csi[0][0], "?") + "/"):
            problem(case, f"spiffe.workload_api {workload} is not a socket in the CSI mount")
    elif workload:
        problem(case, "spiffe.workload_api set without spiffe.enabled")
    return text


# --- deploy/*.yaml against the chart ----------------------------------------

def normalize(obj):
    """Drop what only Helm adds: its labels (also in selectors, a Service's
    included) and the config checksum."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            flat = isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
            if k in ("labels", "matchLabels") or (k == "selector" and flat):
                v = {lk: lv for lk, lv in v.items() if lk not in HELM_ONLY_LABELS}
            elif k == "annotations" and isinstance(v, dict):
                v = {ak: av for ak, av in v.items() if ak != CHECKSUM}
                if not v:
                    continue
            out[k] = normalize(v)
        return out
    if isinstance(obj, list):
        return [normalize(v) for v in obj]
    return obj


def diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a:
                out.append(f"{path}.{k}: only in deploy/")
            elif k not in b:
                out.append(f"{path}.{k}: only in the chart")
            else:
                out += diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: chart {a!r} != deploy/ {b!r}"]


def compare_plain(case: str, objs: list[dict]) -> None:
    chart = {(o["kind"], o["metadata"]["name"]): normalize(o) for o in objs}
    plain = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml" or path.name.startswith("."):
            continue
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                # The Namespace and the Secret placeholders are not the
                # chart's to make (deploy/README.md).
                if doc and doc["kind"] not in ("Namespace", "Secret"):
                    plain[(doc["kind"], doc["metadata"]["name"])] = (path.name, normalize(doc))
    for key in sorted(set(chart) | set(plain)):
        if key not in plain:
            problem(case, f"{key[0]}/{key[1]} is rendered by the chart but not in deploy/")
            continue
        if key not in chart:
            problem(case, f"{key[0]}/{key[1]} ({plain[key][0]}) is in deploy/ but not rendered by the chart")
            continue
        fname, want = plain[key]
        got = copy.deepcopy(chart[key])
        want = copy.deepcopy(want)
        if key[0] == "ConfigMap":
            for d in (got, want):
                d["data"]["ztgate.yaml"] = yaml.safe_load(d["data"]["ztgate.yaml"])
        if key[0] == "Deployment" and "replicas" not in got["spec"]:
            # The chart leaves replicas to the HPA, and so must deploy/
            # (lint-packaging.sh insists on it too).
            if "replicas" in want["spec"]:
                problem(case, "deploy/ Deployment sets replicas although an HPA manages them")
        for d in diff(got, want):
            problem(case, f"deploy/{fname} {key[0]}/{key[1]}{d}")


# --- what must not render -----------------------------------------------------

# (what is wrong, values, a piece of the error Helm must answer with)
REFUSED = [
    ("grace period too short", {"shutdown": {"terminationGracePeriodSeconds": 40}}, "must exceed"),
    ("PDB blocks every drain", {"podDisruptionBudget": {"enabled": True, "minAvailable": 3}}, "must be below"),
    ("PDB vs HPA minimum", {"podDisruptionBudget": {"enabled": True, "minAvailable": 4},
                            "autoscaling": {"enabled": True, "minReplicas": 4}}, "must be below"),
    ("misspelt top-level key", {"replicas": 2}, "replicas"),
    ("wrong type", {"ports": {"grpc": "8443"}}, "grpc"),
    ("ServiceMonitor without Service", {"metrics": {"service": {"enabled": False},
                                                    "serviceMonitor": {"enabled": True}}}, "metrics.service"),
    ("Redis without URL", {"redis": {"enabled": True}}, "redis.url"),
    ("no listener certificate", {"tls": {"server": {"existingSecret": ""}}}, "needs a certificate"),
    ("cert-manager without issuer", {"certManager": {"server": {"enabled": True, "dnsNames": ["a.example"]}}},
     "issuerRef.name"),
    ("cert-manager upstream without a name", {"certManager": {"upstream": {
        "enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "mesh"}}}}, "uris"),
]


def check_refusals() -> None:
    for what, values, needle in REFUSED:
        case = f"refuses {what}"
        try:
            render(values, "ztgate", "edge")
        except helm.HelmError as e:
            if needle not in str(e):
                problem(case, f"refused, but the error does not mention {needle!r}: {e}")
            continue
        problem(case, "rendered without error")


def check_checksum() -> None:
    """A changed config changes checksum/config (the pods roll); with
    rollOnConfigChange: false there is none (ztgate's reload applies it)."""
    def annotation(values):
        [dep] = by_kind(objects_of(render(values, "ztgate", "edge")), "Deployment")
        return (dep["spec"]["template"]["metadata"].get("annotations") or {}).get(CHECKSUM)

    base = annotation({})
    changed = annotation({"config": {"log": {"level": "debug"}}})
    if not base or base == changed:
        problem("checksum", f"config change did not change checksum/config ({base} / {changed})")
    if annotation({"shutdown": {"gracePeriodSeconds": 20}}) == base:
        problem("checksum", "a chart-owned config key (server.grace_period) did not change checksum/config")
    if annotation({"rollOnConfigChange": False}) is not None:
        problem("checksum", "rollOnConfigChange: false still sets checksum/config")


# --- ztgate check -----------------------------------------------------------

def make_certs(tls: Path) -> None:
    """Throw-away certificates (openssl CLI) at every name the chart mounts."""
    tls.mkdir(parents=True)
    run = lambda *a: subprocess.run(a, cwd=tls, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "1", "-subj", "/CN=lint-ca", "-keyout", "ca.key", "-out", "ca.crt")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=ztgate", "-keyout", "leaf.key", "-out", "leaf.csr")
    (tls / "ext").write_text("subjectAltName=DNS:ztgate.example.com\nextendedKeyUsage=serverAuth,clientAuth\n")
    run("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "ext", "-out", "leaf.crt")
    for dst, src in (("server.crt", "leaf.crt"), ("server.key", "leaf.key"),
                     ("upstream-client.crt", "leaf.crt"), ("upstream-client.key", "leaf.key"),
                     ("client-ca.crt", "ca.crt"), ("upstream-ca.crt", "ca.crt")):
        (tls / dst).write_bytes((tls / src).read_bytes())


def ztgate_check(binary: str, configs: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="lint-helm-") as tmp:
        tmp = Path(tmp)
        make_certs(tmp / "tls")
        for case, text in configs.items():
            # The config as deployed, with /etc/ztgate/tls pointing at the
            # throw-away certificates and in-cluster upstream names made
            # resolvable here (check resolves upstream host names).
            text = text.replace("/etc/ztgate/tls/", f"{tmp}/tls/")
            text = re.sub(r"address: [a-z0-9.-]+\.svc\.cluster\.local:", "address: localhost:", text)
            path = tmp / f"{case}.ztgate.yaml"
            path.write_text(text)
            env = dict(os.environ, REDIS_PASSWORD="lint-helm-not-a-secret")
            res = subprocess.run([binary, "check", "-c", str(path)], env=env,
                                 capture_output=True, text=True)
            if res.returncode != 0:
                problem(case, f"ztgate check failed:\n{res.stdout}{res.stderr}")
            else:
                print(f"ok  {case}: ztgate check")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ztgate", required=True, help="the ztgate binary for `ztgate check`")
    ap.add_argument("--out", required=True, help="folder for the rendered manifests (kubernetes-validate)")
    args = ap.parse_args()
    out = Path(args.out)

    print(f"Helm {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__})")
    lint_chart()
    print("ok  helm lint --strict (defaults and every values file)")

    configs = {}
    for vf, name, namespace, expect in CASES:
        case = vf.removesuffix("-values.yaml")
        try:
            rendered = render(load_values(CI / vf), name, namespace)
        except helm.HelmError as e:
            problem(case, f"render failed: {e}")
            continue
        objs = objects_of(rendered)
        core = [o for o in objs if o["kind"] not in CUSTOM_KINDS]
        with open(out / f"{case}.yaml", "w") as f:
            yaml.safe_dump_all(core, f, sort_keys=False)
        before = len(problems)
        text = cross_check(case, objs, namespace, expect)
        if text is not None:
            configs[case] = text
        if expect.get("plain"):
            compare_plain(case, objs)
        kinds = ", ".join(sorted({o["kind"] for o in objs}))
        if len(problems) == before:
            print(f"ok  {case}: {len(objs)} objects ({kinds})"
                  + (", equal to deploy/*.yaml" if expect.get("plain") else ""))

    # The same validator and flags as scripts/lint-packaging.sh uses for
    # deploy/: every object against the Kubernetes OpenAPI schemas.
    files = sorted(str(p) for p in out.glob("*.yaml"))
    validator = Path(sys.executable).parent / "kubernetes-validate"
    res = subprocess.run([str(validator), "--strict", "--quiet", *files], capture_output=True, text=True)
    if res.returncode != 0 or "WARN" in res.stdout + res.stderr:
        problem("kubernetes-validate", (res.stdout + res.stderr).strip())
    else:
        print(f"ok  kubernetes-validate --strict ({len(files)} rendered cases; "
              f"{', '.join(sorted(CUSTOM_KINDS))} checked above instead)")

    before = len(problems)
    check_refusals()
    check_checksum()
    if len(problems) == before:
        print(f"ok  {len(REFUSED)} broken values refused with their reason; checksum/config follows the config")

    ztgate_check(args.ztgate, configs)

    if problems:
        print(f"\nlint_helm: {len(problems)} problems")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
