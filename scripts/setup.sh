#!/usr/bin/env bash
# Install what building ztgate needs on Debian/Ubuntu, if it is missing:
# cmake (Pingora's zlib-ng), perl + make + a C compiler (vendored OpenSSL),
# protoc (the sample gRPC service), pkg-config, redis-server (the shared-state
# tests start a throw-away one per test), the openssl tool (the OCSP tests'
# responder is `openssl ocsp`; stapling is checked with `openssl s_client`).
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v perl >/dev/null || need+=(perl)
command -v make >/dev/null || need+=(make)
command -v cc >/dev/null || need+=(gcc g++)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v redis-server >/dev/null || need+=(redis-server)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null || { echo "Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
