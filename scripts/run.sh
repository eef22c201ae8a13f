#!/usr/bin/env bash
# Sets up, builds and runs tcpkit with the given arguments, e.g. `scripts/run.sh accept -P 80,81 -4`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet --bin tcpkit
if [ "$(id -u)" -eq 0 ]; then exec target/release/tcpkit "$@"; else exec sudo target/release/tcpkit "$@"; fi
