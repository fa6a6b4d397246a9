# syntax=docker/dockerfile:1
# node-agent image: one static binary (with the eBPF syscall monitor compiled in) on an
# empty base. Build: docker build -t node-agent:0.1.0 .   (or: buildah bud ...)

ARG RUST_VERSION=1.95

# ---- builder ------------------------------------------------------------------------
# Runs on the build machine's platform and cross-compiles for the image's platform:
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... .
#   buildah build --platform linux/arm64 -t ... .
FROM --platform=$BUILDPLATFORM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
ARG BPF_LINKER_VERSION=0.10.4
# Set by BuildKit / buildah from --platform.
ARG BUILDARCH
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The eBPF program is built by aya-build with nightly (build-std needs rust-src) and
# linked by bpf-linker, which uses nightly's own LLVM (default rust-llvm feature), so
# no system LLVM is needed. The program is bpfel: the same object on every architecture.
RUN rustup toolchain install nightly --profile minimal --component rust-src \
    && cargo install bpf-linker --locked --version "${BPF_LINKER_VERSION}"
# The Rust target of TARGETARCH, its prebuilt std, and (when it differs from the build
# machine) Debian's cross gcc + libc for linking and for the C in dependencies (ring).
# Debian's cross packages follow the bookworm base image; pinning them would break on
# each point release.
# hadolint ignore=DL3008
RUN case "${TARGETARCH}" in \
        amd64) target=x86_64-unknown-linux-gnu; cross=(gcc-x86-64-linux-gnu libc6-dev-amd64-cross) ;; \
        arm64) target=aarch64-unknown-linux-gnu; cross=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;; \
        *) echo "unsupported TARGETARCH '${TARGETARCH}' (amd64, arm64)" >&2; exit 1 ;; \
    esac \
    && echo "${target}" >/rust-target \
    && rustup target add "${target}" \
    && if [ "${TARGETARCH}" != "${BUILDARCH}" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends "${cross[@]}" \
        && rm -rf /var/lib/apt/lists/*; \
    fi
# The triplet-named gcc is the cross compiler, or Debian's native gcc under that name.
# Flags for the explicit --target only: they reach neither build scripts and proc macros
# (host binaries) nor the nested bpfel-unknown-none build. +crt-static links glibc
# statically (nothing to load at run time, runs on scratch).
# With the linker named here gcc would run GNU ld; agent/build.rs points it at Rust's lld
# for the amd64 binary, whose hot code it lays out with agent/link/metrics.order.
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc \
    AR_x86_64_unknown_linux_gnu=x86_64-linux-gnu-ar \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
WORKDIR /src
COPY . .
# A binary of another architecture cannot run here: --version only on a native build.
RUN target="$(cat /rust-target)" \
    && cargo build --release --locked --package node-agent --features ebpf --target "${target}" \
    && install -D -m 0755 "target/${target}/release/node-agent" /out/node-agent \
    && if [ "${TARGETARCH}" = "${BUILDARCH}" ]; then /out/node-agent --version; fi

# ---- runtime ------------------------------------------------------------------------
# checkov:skip=CKV_DOCKER_2:No HEALTHCHECK - Kubernetes ignores it and probes /healthz and /readyz itself (deploy/base/daemonset.yaml); scratch has no client to run one.
FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="node-agent" \
      org.opencontainers.image.description="Node metrics, container logs and syscall monitoring in one process" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/node-agent"
# CA bundle for the HTTPS sinks (Loki, Elasticsearch) in case system roots are used.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/node-agent /usr/bin/node-agent
# Non-root by default (standalone: give it writable /var/lib/node-agent and
# /var/run/node-agent, or a config with logs.enabled: false). The DaemonSet runs it as UID 0 with
# every capability but DAC_READ_SEARCH dropped, to read root-owned pod logs (deploy/README.md).
USER 65532:65532
EXPOSE 9100
ENTRYPOINT ["/usr/bin/node-agent"]
