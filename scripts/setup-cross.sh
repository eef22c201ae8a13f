#!/usr/bin/env bash
# What cross-building tcpkit for ARCH (aarch64) on this x86-64 Debian machine needs, installed when missing:
# the GNU cross toolchain, Debian's libelf and zlib for that architecture (multiarch: dpkg learns the
# architecture, apt installs libelf-dev:arm64 beside the native one), and the Rust target (rustup).
set -euo pipefail
arch=${1:?usage: scripts/setup-cross.sh aarch64}
case "$arch" in aarch64) debarch=arm64 ;; *) echo "setup-cross: no cross build for $arch" >&2; exit 2 ;; esac
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
packages=("gcc-$arch-linux-gnu" "libc6-dev-$debarch-cross" "libelf-dev:$debarch" "zlib1g-dev:$debarch")
if ! dpkg --print-foreign-architectures | grep -qx "$debarch"; then
  echo "setup-cross: adding the $debarch architecture to dpkg"
  as_root dpkg --add-architecture "$debarch"
  as_root apt-get update -q
fi
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-cross: installing ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
target="$arch-unknown-linux-gnu"
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  command -v rustup >/dev/null || { echo "setup-cross: the $target Rust target needs rustup" >&2; exit 1; }
  rustup target add "$target"
fi
