#!/usr/bin/env bash
# Bounded fuzzing: every cargo-fuzz target of tests/fuzz for 20 s (9 targets, about 3 min
# plus the first build). `cargo xtask fuzz --minutes N` runs longer. Needs nightly.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: the nightly toolchain is missing (cargo-fuzz needs it)" >&2
  exit 1
fi
exec cargo xtask fuzz --seconds "${FUZZ_SECONDS:-20}"
