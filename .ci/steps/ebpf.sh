#!/usr/bin/env bash
# eBPF syscall monitoring: toolchain (idempotent), real build with --features ebpf, and the
# tests that load the program into the running kernel (need root + BTF; they print SKIPPED
# and pass elsewhere). A few minutes on a warm machine; the first bpf-linker install ~2 min.
set -euo pipefail
cd "$(dirname "$0")/../.."

BPF_LINKER_VERSION=0.10.4

echo "--- eBPF toolchain"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
# rust-src ships with the machine's nightly where it was preinstalled; add it otherwise.
rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src' \
    || rustup component add rust-src --toolchain nightly
if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    cargo install bpf-linker --version "$BPF_LINKER_VERSION" --locked --force
fi
bpf-linker --version

echo "--- build node-agent --features ebpf (aya-build compiles ebpf/syscalls-ebpf)"
cargo build -p node-agent --features ebpf

echo "--- unit tests with the eBPF feature"
cargo test -p node-agent-syscalls --features ebpf

echo "--- real eBPF tests (load + attach into this kernel)"
cargo test -p node-agent-tests --features ebpf --test 'syscalls_*' --test 'security_*' --test production_privileges -- --nocapture 2>&1 | tee /tmp/node-agent-ebpf-tests.log
if [ "$(id -u)" = 0 ] && grep -q SKIPPED /tmp/node-agent-ebpf-tests.log; then
    echo "eBPF tests were skipped although running as root" >&2
    exit 1
fi

echo "--- clippy with the eBPF feature"
cargo clippy -p node-agent -p node-agent-syscalls -p node-agent-tests -p xtask --all-targets \
    --features node-agent/ebpf,node-agent-syscalls/ebpf,node-agent-tests/ebpf,xtask/ebpf -- -D warnings
