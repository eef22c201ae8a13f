# shellcheck shell=bash
# Sourced by the scripts that build for one architecture (build-static.sh, package.sh, tests/vm/run-matrix.sh):
# the names of the architecture in each spelling, and where Debian keeps its libraries.

# set_arch SCRIPT ARCH: sets arch (uname -m's spelling: x86_64, aarch64), debarch (Debian's: amd64, arm64) and
# triple (Rust's) from x86_64/amd64 or arm64/aarch64; anything else is SCRIPT's usage error (exit 2).
set_arch() {
  # shellcheck disable=SC2034 # the sourcing script reads them
  case "$2" in
    x86_64 | amd64) arch=x86_64 debarch=amd64 ;;
    arm64 | aarch64) arch=aarch64 debarch=arm64 ;;
    *) echo "$1: --arch takes x86_64 or arm64, not '$2'" >&2; exit 2 ;;
  esac
  triple="$arch-unknown-linux-gnu"
}

# export_libbpf_library_paths: Debian's libelf and zlib of the target $arch (multiarch), and of this machine
# for the libbpf-sys that build scripts link (cargo builds it with the same features).
export_libbpf_library_paths() {
  local host
  host=$(uname -m)
  export "LIBBPF_SYS_LIBRARY_PATH_${triple//-/_}=/usr/lib/$arch-linux-gnu" \
    "LIBBPF_SYS_LIBRARY_PATH_${host}_unknown_linux_gnu=/usr/lib/$host-linux-gnu"
}
