#!/usr/bin/env bash
# The whole test suite: unit tests and integration tests on this kernel (real BPF, so as root), then the
# qemu kernel matrix when tests/vm/run-matrix.sh is present (skip it with TCPKIT_SKIP_VM=1 while iterating).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "test: the integration tests load BPF programs; re-running as root" >&2
  exec sudo -E "$0" "$@"
fi
cargo test --release
if [ -x tests/vm/run-matrix.sh ] && [ "${TCPKIT_SKIP_VM:-0}" != 1 ]; then
  tests/vm/run-matrix.sh
fi
