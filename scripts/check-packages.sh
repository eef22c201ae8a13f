#!/usr/bin/env bash
# CI, after scripts/package.sh: installs the .deb on this machine and proves it works (version, man page, a
# real trace of a loopback connection with the installed binary), removes it and proves every file it
# installed is gone; then lists the .rpm's files and checks they are the same set. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls target/pkg/tcpkit_*.deb)
rpm=$(ls target/pkg/tcpkit-*.rpm)
fail() { echo "check-packages: $*" >&2; exit 1; }

echo "== dpkg -c $deb"
dpkg -c "$deb"
dpkg -i "$deb"
trap 'dpkg -r tcpkit >/dev/null 2>&1 || true' EXIT
mapfile -t installed < <(dpkg -L tcpkit | while read -r f; do if [ -f "$f" ]; then echo "$f"; fi; done)

/usr/sbin/tcpkit --version | grep -q '^tcpkit [0-9].* (' || fail "tcpkit --version"
man -w tcpkit-accept | grep -q '^/usr/share/man/man8/tcpkit-accept.8.gz$' || fail "man -w tcpkit-accept"
[ -z "$(ldd /usr/sbin/tcpkit 2>&1 | grep -v 'not a dynamic executable\|statically linked')" ] \
  || fail "the installed binary is not static: $(ldd /usr/sbin/tcpkit)"

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
/usr/share/man/man8/tcpkit-tracer.8.gz /usr/share/bash-completion/completions/tcpkit
/usr/share/zsh/site-functions/_tcpkit /usr/share/fish/vendor_completions.d/tcpkit.fish
/usr/share/licenses/tcpkit/LICENSE"
for f in $expected; do grep -qx "$f" "$work/rpm-files" || fail "the rpm lacks $f"; done
[ "$(wc -l < "$work/rpm-files")" -eq "$(echo $expected | wc -w)" ] || fail "the rpm holds unexpected files"
rm -rf "$work"
echo "packages: all checks passed"
