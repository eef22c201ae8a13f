#!/usr/bin/env bash
# The whole test suite: unit and integration tests on this kernel (real BPF, so as root), then the same
# integration tests on Debian's 5.10, 6.1 and 6.12 kernels under qemu, x86-64 and arm64 (cross-built), once
# per backend each kernel allows (tests/vm/README.md).
# TCPKIT_VM=0 skips the qemu matrix (a quicker run while developing; CI always runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
if [ "$(id -u)" -ne 0 ]; then
  echo "test: the integration tests load BPF programs; re-running as root" >&2
  exec sudo -E "$0" "$@"
fi
start=$SECONDS
cargo test --release
echo "test: the host tests (with their build) took $((SECONDS - start)) s"
if [ "${TCPKIT_VM:-1}" != 0 ]; then
  start=$SECONDS
  tests/vm/run-matrix.sh --build --arch all
  echo "test: the qemu matrix (with its build) took $((SECONDS - start)) s"
fi
