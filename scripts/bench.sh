#!/usr/bin/env bash
# What tracing costs (issue 5): the loopback connection rate untraced and under `tcpkit accept`, `tcpkit tracer`
# and bpftrace (the reference peer), interleaved; every event printed or not; start-up; peak RSS; CPU per
# event; scaling with client threads and ring size. Prints a table, writes target/bench/results.json.
#
#   scripts/bench.sh [--with-bpftrace] [-- benchmark options]    e.g. -- --connections 40000 --rounds 5
#
# --with-bpftrace installs bpftrace with apt when missing; without it, a missing bpftrace skips its row.
# `scripts/bench.sh -- --help` lists the benchmark's options. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

all_args=("$@")
with_bpftrace=0
while [ $# -gt 0 ]; do
  case "$1" in
    --with-bpftrace) with_bpftrace=1; shift ;;
    --) shift; break ;;
    *) echo "bench: unknown option $1 (usage: scripts/bench.sh [--with-bpftrace] [-- benchmark options])" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: tcpkit loads BPF programs; re-running as root" >&2
  exec sudo -E "$0" "${all_args[@]}"
fi
if [ "$with_bpftrace" = 1 ] && ! command -v bpftrace >/dev/null 2>&1; then
  echo "bench: installing bpftrace"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends bpftrace
fi
cargo build --release --bin tcpkit
exec cargo bench --bench overhead -- "$@"
