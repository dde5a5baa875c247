#!/usr/bin/env bash
# Checks of the Helm chart deploy/helm/ztgate with Helm's own engine — no
# `helm` binary and no cluster: PyPI's helm-python-sdk is Helm v4's Go SDK
# behind a C ABI.
#
#   scripts/lint-helm.sh            # after a build (ZTGATE_BIN, default target/debug/ztgate)
#
# 1. helm lint --strict, with the defaults and with every values file in
#    deploy/helm/ztgate/ci/.
# 2. Render each values file (defaults, production, spire, redis,
#    existing-configmap, cert-manager, plain-manifests) and cross-check what
#    no schema can: selectors, named ports, probes, Pod Security
#    "restricted" settings, every certificate path in the config provided by
#    a mounted Secret, the config checksum, the grace-period arithmetic,
#    ${VAR}s in the env, the SPIFFE CSI socket, cert-manager Secrets mounted.
# 3. kubernetes-validate --strict on every rendered object (as
#    scripts/lint-packaging.sh does for deploy/). ServiceMonitor and
#    Certificate come from CRDs the bundled schemas lack: step 2 checks them.
# 4. deploy/*.yaml equal the chart rendered with ci/plain-manifests-values.yaml
#    (the chart is the source of truth; deploy/README.md).
# 5. Broken values are refused at render time with their reason.
# 6. `ztgate check` on every rendered ztgate.yaml, with throw-away
#    certificates (openssl CLI) at the mounted paths.
#
# Its Python tools live in a virtual environment under .cache/lint-helm/
# (git-ignored), made on first use; network is needed then.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${ZTGATE_BIN:-target/debug/ztgate}"
if [[ ! -x "$bin" ]]; then
  echo "lint-helm: no ztgate binary at $bin (cargo build -p ztgate, or set ZTGATE_BIN)" >&2
  exit 1
fi
command -v openssl >/dev/null || { echo "lint-helm: the openssl CLI is required" >&2; exit 1; }

# Debian splits venv (ensurepip) out of python3: install what is missing,
# as scripts/setup.sh does for the build.
if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "lint-helm: installing python3 python3-venv (apt)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv
fi

venv=.cache/lint-helm/venv
# Pinned: the Helm engine (0.2.2 = Helm v4's SDK) and the schema bundle
# (Kubernetes 1.37) the checks were written against.
reqs=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.4)
if [[ ! -f "$venv/.ready" ]] || [[ "$(cat "$venv/.ready")" != "${reqs[*]}" ]]; then
  echo "lint-helm: installing ${reqs[*]} into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${reqs[@]}"
  echo "${reqs[*]}" >"$venv/.ready"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$venv/bin/python" scripts/lint_helm.py --ztgate "$bin" --out "$out"
printf '\nlint-helm: all checks passed\n'
