#!/usr/bin/env bash
# CI, after scripts/package.sh for x86-64 and arm64: installs the x86-64 .deb on this machine and proves it works (version, man page, a
# real trace of a loopback connection with the installed binary), removes it and proves every file it
# installed is gone; checks that its binary is stripped, links only Debian's libelf and zlib (besides glibc)
# and that tcpkit-dbgsym holds the symbols of exactly that binary; lists the .rpm's files and checks they
# are the same set; checks the static tarball's binary is static and runs. The arm64 packages cannot run
# here: their architecture fields, that their binaries are aarch64 ELF files linking the same libraries, that
# the symbols match, and that they hold the same files. Then, for both architectures, that the .deb's and
# the tarball's binaries are the very ones that printed their version and traced a connection in every qemu
# guest of that architecture (tests/vm/run-matrix.sh, run after scripts/package.sh, records them in
# target/vm/packages-ran.tsv). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls target/pkg/tcpkit_*_amd64.deb)
dbgsym=$(ls target/pkg/tcpkit-dbgsym_*_amd64.ddeb)
rpm=$(ls target/pkg/tcpkit-[0-9]*.x86_64.rpm)
debuginfo=$(ls target/pkg/tcpkit-debuginfo-*.x86_64.rpm)
tarball=$(ls target/pkg/tcpkit-*-x86_64-static.tar.gz)
fail() { echo "check-packages: $*" >&2; exit 1; }
# The libraries BIN needs besides glibc, the loader and libgcc_s, sorted, space-separated.
extra_libs() {
  readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -v '^ld-linux\|^libc\.so\|^libgcc_s\.so' \
    | sort | tr '\n' ' '
}
build_id() { readelf -n "$1" | sed -n 's/^ *Build ID: *//p'; }

echo "== dpkg -c $deb"
dpkg -c "$deb"
dpkg -i "$deb"
trap 'dpkg -r tcpkit >/dev/null 2>&1 || true' EXIT
mapfile -t installed < <(dpkg -L tcpkit | while read -r f; do if [ -f "$f" ]; then echo "$f"; fi; done)

/usr/sbin/tcpkit --version | grep -q '^tcpkit [0-9].* (' || fail "tcpkit --version"
man -w tcpkit-accept | grep -q '^/usr/share/man/man8/tcpkit-accept.8.gz$' || fail "man -w tcpkit-accept"
# Besides glibc, the loader and libgcc_s: Debian's libelf and zlib, nothing else (libbpf is linked in).
needed=$(extra_libs /usr/sbin/tcpkit)
[ "$needed" = "libelf.so.1 libz.so.1 " ] || fail "the binary needs: $needed"
dpkg-deb -f "$deb" Depends | grep -q 'libelf1' || fail "Depends does not name libelf1: $(dpkg-deb -f "$deb" Depends)"
readelf -SW /usr/sbin/tcpkit | grep '\.symtab\|\.debug_info\|\.debug_line' >/dev/null && fail "the installed binary is not stripped"
build_id=$(build_id /usr/sbin/tcpkit)
dpkg -c "$dbgsym" | grep "/usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug\$" >/dev/null \
  || fail "$dbgsym has no symbols for build id $build_id"

# A real trace: the installed tcpkit sees the test peer accept one loopback connection.
cargo build --release --locked --bin tcpkit-peer >/dev/null
work=$(mktemp -d)
target/release/tcpkit-peer listen --count 1 > "$work/peer" &
for _ in $(seq 100); do grep -q '^port ' "$work/peer" && break; sleep 0.1; done
port=$(sed -n 's/^port //p' "$work/peer")
[ -n "$port" ] || fail "the peer did not listen"
/usr/sbin/tcpkit accept -P "$port" -c 1 -d 30 > "$work/trace" 2> "$work/err" &
tcpkit_pid=$!
for _ in $(seq 100); do grep -q '^PID' "$work/trace" && break; sleep 0.1; done
grep -q '^PID' "$work/trace" || fail "installed tcpkit printed no header: $(cat "$work/err")"
bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
wait "$tcpkit_pid" || fail "installed tcpkit failed: $(cat "$work/err")"
grep -q " $port *\$" "$work/trace" || fail "the accept on port $port was not traced: $(cat "$work/trace")"
echo "== traced with the installed binary:"; cat "$work/trace"
wait

dpkg -r tcpkit >/dev/null
trap - EXIT
for f in "${installed[@]}"; do [ ! -e "$f" ] || fail "dpkg -r left $f behind"; done
echo "== dpkg -r removed all ${#installed[@]} files"

command -v rpm2cpio >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends rpm2cpio cpio >/dev/null; }
echo "== files in $rpm"
# Debian's rpm2cpio exits 1 on cargo-generate-rpm's (complete, zstd) payload; the list below is the check.
rpm2cpio "$rpm" > "$work/payload.cpio" || true
cpio -t --quiet < "$work/payload.cpio" | sed 's|^\./|/|' | sort | tee "$work/rpm-files"
expected="/usr/sbin/tcpkit /usr/share/man/man8/tcpkit.8.gz /usr/share/man/man8/tcpkit-accept.8.gz
/usr/share/man/man8/tcpkit-metrics.8.gz /usr/share/man/man8/tcpkit-tracer.8.gz
/usr/share/bash-completion/completions/tcpkit
/usr/share/zsh/site-functions/_tcpkit /usr/share/fish/vendor_completions.d/tcpkit.fish
/usr/share/licenses/tcpkit/LICENSE /usr/share/doc/tcpkit/README.md"
for f in $expected; do grep -qx "$f" "$work/rpm-files" || fail "the rpm lacks $f"; done
[ "$(wc -l < "$work/rpm-files")" -eq "$(echo $expected | wc -w)" ] || fail "the rpm holds unexpected files"
rpm2cpio "$debuginfo" > "$work/debuginfo.cpio" || true
cpio -t --quiet < "$work/debuginfo.cpio" | grep "^\./usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug\$" >/dev/null \
  || fail "$debuginfo has no symbols for build id $build_id"

echo "== $tarball"
tar -C "$work" -xzf "$tarball"
static_bin=$(ls "$work"/tcpkit-*-static/tcpkit)
readelf -d "$static_bin" | grep NEEDED >/dev/null && fail "the tarball's binary is not static"
"$static_bin" --version | grep '^tcpkit [0-9]' >/dev/null || fail "the tarball's binary does not run"

# arm64: what can be checked without an arm64 machine.
arm_deb=$(ls target/pkg/tcpkit_*_arm64.deb)
echo "== $arm_deb"
[ "$(dpkg-deb -f "$arm_deb" Architecture)" = arm64 ] || fail "$arm_deb: Architecture $(dpkg-deb -f "$arm_deb" Architecture)"
dpkg-deb -f "$arm_deb" Depends | grep libelf1 >/dev/null || fail "$arm_deb: Depends $(dpkg-deb -f "$arm_deb" Depends)"
diff <(dpkg -c "$deb" | awk '{ print $6 }') <(dpkg -c "$arm_deb" | awk '{ print $6 }') \
  || fail "the arm64 .deb holds other files than the x86-64 one"
mkdir "$work/arm"
dpkg-deb -x "$arm_deb" "$work/arm"
arm_bin="$work/arm/usr/sbin/tcpkit"
readelf -h "$arm_bin" | grep 'Machine: *AArch64' >/dev/null || fail "$arm_bin is not an aarch64 ELF file"
arm_needed=$(extra_libs "$arm_bin")
[ "$arm_needed" = "libelf.so.1 libz.so.1 " ] || fail "the arm64 binary needs: $arm_needed"
arm_id=$(build_id "$arm_bin")
dpkg -c "$(ls target/pkg/tcpkit-dbgsym_*_arm64.ddeb)" | grep "/usr/lib/debug/.build-id/${arm_id:0:2}/${arm_id:2}.debug\$" \
  >/dev/null || fail "tcpkit-dbgsym for arm64 has no symbols for build id $arm_id"
for f in target/pkg/tcpkit-[0-9]*.aarch64.rpm target/pkg/tcpkit-debuginfo-*.aarch64.rpm; do
  [ "$(rpm -qp --qf '%{ARCH}' "$f" 2>/dev/null)" = aarch64 ] || fail "$f is not an aarch64 RPM"
done
tar -C "$work" -xzf "$(ls target/pkg/tcpkit-*-aarch64-static.tar.gz)"
arm_static=$(ls "$work"/tcpkit-*-aarch64-static/tcpkit)
readelf -h "$arm_static" | grep 'Machine: *AArch64' >/dev/null || fail "$arm_static is not an aarch64 ELF file"
readelf -d "$arm_static" | grep NEEDED >/dev/null && fail "the arm64 tarball's binary is not static"
echo "== arm64: architecture, binary, symbols and file list as expected"

# Both architectures' binaries ran on Debian's kernels: every guest of the last qemu matrix must have run
# these exact files (sha256 of what the guest executed, as it printed it).
vm=${TCPKIT_VM_OUT:-target/vm}
if [ ! -s "$vm/guests.tsv" ] || [ ! -s "$vm/packages-ran.tsv" ]; then
  fail "no qemu matrix record in $vm: run tests/vm/run-matrix.sh after scripts/package.sh"
fi
ran_everywhere() { # ran_everywhere DEBARCH ARTIFACT FILE
  local sum guests n=0 release
  sum=$(sha256sum "$3" | cut -d' ' -f1)
  guests=$(awk -F'\t' -v a="$1" '$1 == a { print $2 }' "$vm/guests.tsv")
  [ -n "$guests" ] || fail "the last qemu matrix booted no $1 guest"
  for release in $guests; do
    grep -qxF "$(printf '%s\t%s\t%s\t%s' "$1" "$release" "$2" "$sum")" "$vm/packages-ran.tsv" \
      || fail "the $1 $2 binary ($3) did not run in the $release guest"
    n=$((n + 1))
  done
  echo "== $1 $2 binary ran in $n guests: $(echo "$guests" | paste -sd' ')"
}
dpkg-deb -x "$deb" "$work/amd64-deb"
ran_everywhere amd64 deb "$work/amd64-deb/usr/sbin/tcpkit"
ran_everywhere amd64 static "$static_bin"
ran_everywhere arm64 deb "$arm_bin"
ran_everywhere arm64 static "$arm_static"

rm -rf "$work"
echo "packages: all checks passed"
