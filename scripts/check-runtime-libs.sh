#!/usr/bin/env bash
# Fail if a ztgate binary needs a shared library the runtime image lacks.
#
#   scripts/check-runtime-libs.sh [BINARY]     (default: target/release/ztgate)
#
# The runtime image is gcr.io/distroless/cc-debian12 (see the Dockerfile). It
# has no package manager, so a library the binary needs and the image lacks is
# a crash at start-up that no build step would notice. The Dockerfile runs this
# on the release binary; run it on a local build too (same link dependencies in
# debug and release).
set -euo pipefail

bin="${1:-target/release/ztgate}"
if [[ ! -x "$bin" ]]; then
  echo "check-runtime-libs: $bin: not an executable file (build it first)" >&2
  exit 2
fi
if ! command -v ldd >/dev/null; then
  echo "check-runtime-libs: ldd not found" >&2
  exit 2
fi

# What distroless cc-debian12 ships, by soname. The image is distroless
# `base-debian12` (libc6: libc, libm, libpthread, libdl, librt, libresolv,
# libutil, the loader; plus libssl3, ca-certificates, tzdata, netbase) with
# `libgcc-s1`, `libstdc++6`, `libgomp1` and `gcc-12-base` added
# (GoogleContainerTools/distroless: cc/README.md, cc/config.bzl CC_PACKAGES).
# linux-vdso is provided by the kernel, not a file.
allowed=(
  linux-vdso.so.1
  ld-linux-x86-64.so.2
  ld-linux-aarch64.so.1
  libc.so.6
  libm.so.6
  libpthread.so.0
  libdl.so.2
  librt.so.1
  libresolv.so.2
  libutil.so.1
  libgcc_s.so.1
  libstdc++.so.6
  libgomp.so.1
)

# libssl3 is in the image too, but ztgate must not use it: Pingora builds
# OpenSSL from source and links it statically, and the image's CA set-up
# (SSL_CERT_FILE) and the tests assume that OpenSSL. A dynamic libssl or
# libcrypto means the vendored build was lost.
refused_reason() {
  case "$1" in
    libssl.so.* | libcrypto.so.*)
      echo "OpenSSL must be linked statically (Pingora's vendored build), not from the image"
      ;;
    *)
      echo "not in gcr.io/distroless/cc-debian12"
      ;;
  esac
}

if ! out="$(ldd "$bin" 2>&1)"; then
  if grep -q "not a dynamic executable" <<<"$out"; then
    echo "check-runtime-libs: $bin is not a dynamic executable (static, or not ELF): nothing to check"
    exit 0
  fi
  echo "check-runtime-libs: ldd $bin failed:" >&2
  echo "$out" >&2
  exit 2
fi

bad=0
while read -r line; do
  [[ -z "$line" ]] && continue
  # Forms: "libx.so.1 => /path (0x..)", "libx.so.1 => not found",
  # "/lib64/ld-linux-x86-64.so.2 (0x..)", "linux-vdso.so.1 (0x..)".
  name="${line%% *}"
  name="${name##*/}"
  if [[ "$line" == *"not found"* ]]; then
    echo "MISSING  $name: not found on this machine either" >&2
    bad=1
    continue
  fi
  ok=0
  for a in "${allowed[@]}"; do
    if [[ "$name" == "$a" ]]; then
      ok=1
      break
    fi
  done
  if [[ "$ok" == 1 ]]; then
    echo "ok       $name"
  else
    echo "REFUSED  $name: $(refused_reason "$name")" >&2
    bad=1
  fi
done <<<"$out"

if [[ "$bad" != 0 ]]; then
  echo "check-runtime-libs: $bin needs libraries the runtime image does not provide" >&2
  exit 1
fi
echo "check-runtime-libs: $bin: every shared library is in the runtime image"
