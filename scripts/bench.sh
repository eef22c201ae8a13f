#!/usr/bin/env bash
# What tracing costs (issue 5): the loopback connection rate untraced and under `tcpkit accept`, `tcpkit tracer`,
# `tcpkit metrics` and bpftrace (the reference peer), interleaved; every event printed (or counted) or not;
# start-up; peak RSS; CPU per event; BPF time per connection; one scrape of 10,000 metrics series; scaling
# with client threads and ring size. Prints a table, writes target/bench/results.json.
#
#   scripts/bench.sh [--with-peers] [--floor] [--baseline REV] [-- benchmark options]    e.g. -- --rounds 5
#
# --with-peers installs the peers with apt when missing: bpftrace, and Debian's libbpf-tools (tcplife and
# tcpstates get rows); without it, a missing peer skips its rows. (--with-bpftrace is the old name.)
# --baseline REV builds that git revision (in target/bench/baseline, a worktree) and measures its accept and
# tracer in the same run, interleaved with the rest: before/after a change as same-run ratios.
# --floor builds this tree with the bench-floor feature (in target/bench/floor-target): the same hooks, each
# moving a zeroed record through the ring and nothing else, measured as rows of their own (the floor).
# `scripts/bench.sh -- --help` lists the benchmark's options. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

all_args=("$@")
with_peers=0
baseline=""
floor=0
while [ $# -gt 0 ]; do
  case "$1" in
    --with-peers | --with-bpftrace) with_peers=1; shift ;;
    --baseline) baseline=${2:?--baseline needs a git revision}; shift 2 ;;
    --floor) floor=1; shift ;;
    --) shift; break ;;
    *) echo "bench: unknown option $1 (usage: scripts/bench.sh [--with-peers] [--floor] [--baseline REV] [-- benchmark options])" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: tcpkit loads BPF programs; re-running as root" >&2
  exec sudo -E "$0" "${all_args[@]}"
fi
if [ "$with_peers" = 1 ] && ! { command -v bpftrace && command -v tcplife; } >/dev/null 2>&1; then
  echo "bench: installing bpftrace and libbpf-tools"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends bpftrace libbpf-tools
fi
cargo build --release --bin tcpkit
extra=()
if [ -n "$baseline" ]; then
  dir=target/bench/baseline
  rev=$(git rev-parse --verify "$baseline^{commit}") || { echo "bench: no such revision: $baseline" >&2; exit 2; }
  if [ -d "$dir" ]; then git -C "$dir" checkout -q --detach "$rev"; else git worktree add -q --detach "$dir" "$rev"; fi
  echo "bench: building the baseline $(git rev-parse --short "$rev") in $dir"
  (cd "$dir" && cargo build -q --release --bin tcpkit --target-dir "$PWD/../baseline-target")
  extra=(--baseline "$PWD/target/bench/baseline-target/release/tcpkit")
fi
if [ "$floor" = 1 ]; then
  echo "bench: building the floor (--features bench-floor) in target/bench/floor-target"
  cargo build -q --release --bin tcpkit --features bench-floor --target-dir target/bench/floor-target
  extra+=(--floor "$PWD/target/bench/floor-target/release/tcpkit")
fi
exec cargo bench --bench overhead -- "${extra[@]}" "$@"
