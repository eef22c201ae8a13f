#!/usr/bin/env bash
# Builds tcpkit as one static binary: glibc, libbpf, libelf and zlib linked in, so it needs nothing but the
# kernel. Prints the binary's path. (tcpkit resolves no users or hosts, so a static glibc needs no NSS.)
#
#   scripts/build-static.sh [--arch x86_64|arm64] [BINARY]
#
# BINARY names another binary of the package to build the same way (the tests' tcpkit-peer, for a container
# that holds nothing else). --arch arm64 cross-builds for aarch64 on an x86-64 machine: it installs the cross
# compiler and Debian's arm64 libelf and zlib (dpkg --add-architecture arm64) and the Rust target (rustup)
# when missing; the BPF objects are compiled for arm64 (libbpf-cargo passes -D__TARGET_ARCH_arm64).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/arch.sh
set_arch build-static "$(uname -m)"
if [ "${1:-}" = "--arch" ]; then
  set_arch build-static "${2:-}"
  shift 2
fi
bin="${1:-tcpkit}"
scripts/setup.sh >&2
if [ "$arch" != "$(uname -m)" ]; then
  scripts/setup-cross.sh "$arch" >&2 # the cross tools themselves are named in .cargo/config.toml
fi
# The static libelf.a and libz.a of each architecture, Debian's. --target keeps build scripts and proc
# macros dynamic: +crt-static applies to the target binary only.
export_libbpf_library_paths
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --features static --target "$triple" --bin "$bin" >&2
echo "target/$triple/release/$bin"
