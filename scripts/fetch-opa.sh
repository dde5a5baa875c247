#!/usr/bin/env bash
# Fetch a real Open Policy Agent engine for the policy conformance test
# (plugins/policy/src/tests/opa_conformance.rs): PyPI's
# `opa-golib-python-bindings` — OPA's Go engine built as a C shared library
# with a small ctypes wrapper. The wheel declares Python >= 3.14, but its
# wrapper runs on the 3.11 Debian 12 ships, so it is downloaded for 3.14 and
# unpacked (not pip-installed) into .cache/opa/VERSION/, which the test puts
# on PYTHONPATH. Idempotent; prints the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.4.4
DEST=.cache/opa/$VERSION
if [ -f "$DEST/opa_bindings/libopabridge.so" ]; then
    echo "$DEST"
    exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.14 \
    --platform manylinux_2_34_x86_64 -d "$TMP" "opa-golib-python-bindings==$VERSION" >&2
mkdir -p "$DEST.tmp"
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$TMP"/*.whl "$DEST.tmp"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "$DEST"
