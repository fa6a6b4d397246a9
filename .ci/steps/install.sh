#!/usr/bin/env bash
# Installs the test peers a fresh Debian machine lacks. Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v prometheus-node-exporter >/dev/null || need+=(prometheus-node-exporter)
command -v promtool >/dev/null || need+=(prometheus)
command -v curl >/dev/null || need+=(curl)
# ip and unshare run the kept-files test in its own network namespace.
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
# nft makes conntrack entries in a test's own network namespace (tests/tests/conntrack_netns.rs).
command -v nft >/dev/null || need+=(nftables)
# dbus-daemon carries the fake systemd of tests/tests/systemd_dbus.rs.
command -v dbus-daemon >/dev/null || need+=(dbus)
# systemd-journal-remote writes real journal files for the journal reader's tests; journalctl
# (package systemd) reads them back as the oracle.
[ -x /lib/systemd/systemd-journal-remote ] || need+=(systemd-journal-remote)
command -v journalctl >/dev/null || need+=(systemd)
# Headless Chromium renders the status page in tests/tests/status_page.rs.
command -v chromium >/dev/null || need+=(chromium)
# The real-kernel security tests drive strace (ptrace attach) and script (a tty).
command -v strace >/dev/null || need+=(strace)
command -v script >/dev/null || need+=(bsdutils)
# runc runs the agent with exactly the DaemonSet's privileges (tests/tests/production_privileges.rs).
command -v runc >/dev/null || need+=(runc)
# arm64 cross build and its unit tests under emulation (.ci/steps/arm64.sh).
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[[ -f /usr/aarch64-linux-gnu/lib/libc.a ]] || need+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if ((${#need[@]})); then
  echo "install.sh: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps it small; policy-rc.d stops services from starting.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need[@]}"
  rm -f /usr/sbin/policy-rc.d
fi
# The Debian package may start node_exporter on :9100 where systemd runs; tests use their own ports.
for c in cargo-clippy rustfmt; do
  command -v "$c" >/dev/null || rustup component add "${c#cargo-}"
done
# rust-src for nightly: -Z build-std (arm64 cross build, and the eBPF program).
if rustup toolchain list | grep -q '^nightly' &&
  ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  rustup component add rust-src --toolchain nightly
fi
# kubectl and helm for the manifest tests in `cargo test --workspace` (cached by deploy.sh).
DEPLOY_INSTALL_ONLY=1 bash "$(dirname "${BASH_SOURCE[0]}")/deploy.sh"
echo "install.sh: prerequisites present"
