# syntax=docker/dockerfile:1
# node-agent image: one static binary (with the eBPF syscall monitor compiled in) on an
# empty base. Build: docker build -t node-agent:0.1.0 .   (or: buildah bud ...)

ARG RUST_VERSION=1.95

# ---- builder ------------------------------------------------------------------------
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
ARG BPF_LINKER_VERSION=0.10.4
ARG TARGET=x86_64-unknown-linux-gnu
# The eBPF program is built by aya-build with nightly (build-std needs rust-src) and
# linked by bpf-linker, which uses nightly's own LLVM (default rust-llvm feature), so
# no system LLVM is needed.
RUN rustup toolchain install nightly --profile minimal --component rust-src \
    && cargo install bpf-linker --locked --version "${BPF_LINKER_VERSION}"
WORKDIR /src
COPY . .
# +crt-static links glibc statically (nothing to load at run time, runs on scratch).
# Flags for the x86_64 target only, with an explicit --target: they reach neither build
# scripts and proc macros (dynamic host binaries) nor the nested bpfel-unknown-none build.
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
RUN cargo build --release --locked --package node-agent --features ebpf --target "${TARGET}" \
    && install -D -m 0755 "target/${TARGET}/release/node-agent" /out/node-agent \
    && /out/node-agent --version

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
# Non-root by default (standalone, metrics only). The DaemonSet runs it as UID 0 with
# every capability but DAC_READ_SEARCH dropped, to read root-owned pod logs (deploy/README.md).
USER 65532:65532
EXPOSE 9100
ENTRYPOINT ["/usr/bin/node-agent"]
