# syntax=docker/dockerfile:1.7
#
# ztgate container image.
#
#   docker build -t ztgate .
#   docker run --rm -v "$PWD/deploy-local:/etc/ztgate:ro" -p 8443:8443 -p 9901:9901 ztgate
#
# The mounted folder holds ztgate.yaml (admin.address must be 0.0.0.0:9901 for
# the port mapping and the orchestrator's probes to reach it) and the certs it
# names. `deploy/` has Kubernetes manifests built on this image.
#
# Stages:
#   chef     Rust toolchain + the native build tools + cargo-chef.
#   planner  Reduces the workspace to a dependency "recipe" (manifests only).
#   builder  Compiles the dependencies from the recipe (one cached layer that
#            survives source edits; it holds the slow vendored OpenSSL build),
#            then the sources, into a release `ztgate` without the demo.
#   runtime  distroless, non-root, just the binary.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS chef
# Pingora builds OpenSSL from source (openssl-src: needs cmake, perl, make and
# a C compiler — perl/make/gcc are in the rust image already). No protoc: only
# the demo's test kit (the `demo` feature, left out below) compiles .proto
# files. Debian's archive keeps only the current revision of a bookworm
# package, so exact version pins would break the build at the next point
# release: the base image tag pins the distribution instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# ---------------------------------------------------------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------------------
FROM chef AS builder
# Dependencies only: this layer is rebuilt when Cargo.toml/Cargo.lock change,
# not when a source file does. `--no-default-features` leaves out the `demo`
# feature: the image's binary links no test kit (throw-away PKI, sample gRPC
# backends, OIDC provider) or rcgen, and `ztgate demo` in it says so (tonic
# is linked: the OTLP/gRPC span exporter uses it).
# Both commands take the same flags, or `cook` would build other dependencies.
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --no-default-features -p ztgate --bin ztgate --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --no-default-features -p ztgate --bin ztgate \
    && install -D -m 0755 target/release/ztgate /out/ztgate \
    && scripts/check-runtime-libs.sh /out/ztgate

# ---------------------------------------------------------------------------
# distroless/cc-debian12: glibc (libc, libm, libpthread, libdl, librt, the
# loader), libgcc_s (Rust's unwinder), libstdc++/libgomp, the Debian CA bundle
# (/etc/ssl/certs/ca-certificates.crt), tzdata, /tmp and a `nonroot` user
# (65532) — and no shell or package manager. ztgate links OpenSSL statically,
# so these are all it needs; scripts/check-runtime-libs.sh (run above on the
# release binary) fails the build if that ever changes. `static` would lack
# glibc; debian-slim would add a shell and apt for no gain.
FROM ${RUNTIME_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ztgate" \
      org.opencontainers.image.description="Zero-trust L7 gateway for gRPC on Pingora" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

# Pingora's vendored OpenSSL was configured with its own OPENSSLDIR, not
# Debian's /etc/ssl, so its default verify paths miss the image's CA bundle.
# Pingora's upstream connector probes well-known locations (openssl-probe)
# when nothing is set, but an explicit SSL_CERT_FILE is what it and OpenSSL
# honour first: upstream TLS without `ca:` ("system roots") verifies against
# exactly this file (tests/e2e_system_ca.rs proves the mechanism). To trust a
# private CA, mount a bundle and point SSL_CERT_FILE at it.
# Note: the jwt filter's JWKS/discovery client (reqwest + rustls) uses its
# built-in Mozilla roots plus `jwt.issuers[].ca_file`, not this variable.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

COPY --from=builder /out/ztgate /usr/local/bin/ztgate

# Numeric so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
WORKDIR /etc/ztgate

# 8443: the gRPC (TLS, h2) listener; 9901: admin (/healthz, /readyz, /metrics).
EXPOSE 8443 9901

# No shell in the image: the binary probes itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/ztgate", "probe", "http://127.0.0.1:9901/readyz"]

ENTRYPOINT ["/usr/local/bin/ztgate"]
CMD ["run", "-c", "/etc/ztgate/ztgate.yaml"]
