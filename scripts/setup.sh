#!/usr/bin/env bash
# Installs what building and testing tcpkit needs on a fresh Debian or Ubuntu machine: clang for the BPF
# objects, libelf and zlib for libbpf, man for the man-page test. Rust (cargo 1.82+) must already be there.
# --test adds what the tests use besides: podman and runc, to run tcpkit's image and a container to trace;
# prometheus (with promtool), which scrapes `tcpkit metrics` in its tests.
set -euo pipefail

packages=(clang libelf-dev zlib1g-dev pkg-config make man-db)
if [ "${1:-}" = "--test" ]; then
  packages+=(podman runc iproute2 nftables prometheus)
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# This machine's own architecture's package (or an Architecture: all one): with another architecture's
# libelf-dev beside it (scripts/setup-cross.sh), a bare `dpkg -s libelf-dev` is ambiguous and fails.
native=$(dpkg --print-architecture)
installed() {
  dpkg-query -W -f='${Status} ${Architecture}\n' "$1" 2>/dev/null | grep -qx "install ok installed \($native\|all\)"
}
missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: tcpkit needs Rust 1.82 or later (cargo); install it with rustup or your distribution" >&2
  exit 1
fi
