#!/usr/bin/env bash
# Builds tcpkit as one static binary: glibc, libbpf, libelf and zlib linked in, so it needs nothing but the
# kernel. Prints the binary's path. (tcpkit resolves no users or hosts, so a static glibc needs no NSS.)
# An argument names another binary of the package to build the same way (the tests' tcpkit-peer, for a
# container that holds nothing else).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-tcpkit}"
scripts/setup.sh >&2
triple="$(uname -m)-unknown-linux-gnu"
# --target keeps build scripts and proc macros dynamic: +crt-static applies to the target binary only.
LIBBPF_SYS_LIBRARY_PATH="/usr/lib/$(uname -m)-linux-gnu" RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --features static --target "$triple" --bin "$bin" >&2
echo "target/$triple/release/$bin"
