#!/usr/bin/env bash
# CI step "arm64": cross-builds the static node-agent binary for aarch64 (nightly
# -Z build-std, Debian's aarch64 gcc as linker, glibc +crt-static as the x86_64 image),
# checks it is a static AArch64 ELF, runs `node-agent --version` and the agent crates'
# unit tests under qemu-aarch64 (xtask/src/cross.rs says how and why); once without
# features and once with `ebpf` (the image's build: the bpfel object is the same for
# every architecture). qemu-user has no bpf(), so loading the program is tested natively
# only (.ci/steps/ebpf.sh). Idempotent: the cross toolchain and qemu-user come from
# .ci/steps/install.sh, bpf-linker as in .ci/steps/ebpf.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# The agent crates to build and unit-test for aarch64 (the binary comes from node-agent).
PACKAGES=(node-agent node-agent-core node-agent-metrics node-agent-sinks node-agent-logs
    node-agent-handover node-agent-syscalls node-agent-journal node-agent-security
    node-agent-kube)
# Each entry is one build + test pass ("" = no features).
FEATURE_SETS=("" node-agent/ebpf)
BPF_LINKER_VERSION=0.10.4

bash .ci/steps/install.sh
if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    cargo install bpf-linker --version "$BPF_LINKER_VERSION" --locked --force
fi

for features in "${FEATURE_SETS[@]}"; do
    args=()
    for package in "${PACKAGES[@]}"; do args+=(--package "$package"); done
    [[ -n $features ]] && args+=(--features "$features")
    echo "==> arm64: cargo xtask cross aarch64 ${args[*]}"
    cargo xtask cross aarch64 "${args[@]}"
done
