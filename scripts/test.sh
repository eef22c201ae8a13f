#!/usr/bin/env bash
# The whole test suite: unit tests and integration tests on this kernel (real BPF, so as root). With
# TCPKIT_VM=1 it then runs the qemu kernel matrix (tests/vm/run-matrix.sh), which is not yet part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "test: the integration tests load BPF programs; re-running as root" >&2
  exec sudo -E "$0" "$@"
fi
cargo test --release
if [ "${TCPKIT_VM:-0}" = 1 ]; then
  tests/vm/run-matrix.sh --build
fi
