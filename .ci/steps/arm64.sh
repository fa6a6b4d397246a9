#!/usr/bin/env bash
# CI step "arm64": cross-builds the static node-agent binary for aarch64 (nightly
# -Z build-std, Debian's aarch64 gcc as linker, glibc +crt-static as the x86_64 image),
# checks it is a static AArch64 ELF, runs `node-agent --version` and the agent crates'
# unit tests under qemu-aarch64 (xtask/src/cross.rs says how and why). Idempotent: the
# cross toolchain and qemu-user come from .ci/steps/install.sh.
#
#   ARM64_FEATURES  cargo features for the build and the tests (default: none; `ebpf`
#                   also needs bpf-linker, see .ci/steps/ebpf.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# The agent crates to build and unit-test for aarch64 (the binary comes from node-agent).
PACKAGES=(node-agent)
FEATURES=${ARM64_FEATURES-}

bash .ci/steps/install.sh

args=()
for package in "${PACKAGES[@]}"; do args+=(--package "$package"); done
[[ -n $FEATURES ]] && args+=(--features "$FEATURES")
cargo xtask cross aarch64 "${args[@]}"
