#!/usr/bin/env bash
# Builds tcpkit's packages for one architecture (this machine's, or --arch arm64 cross-built on x86-64) into
# target/pkg/, beside those of the other architecture:
#   tcpkit_<v>-1_<arch>.deb, tcpkit-dbgsym_<v>-1_<arch>.ddeb   Debian's way: libelf and zlib from the distro
#                                (Depends from dpkg-shlibdeps), libbpf linked in, stripped; symbols apart
#   tcpkit-<v>-1.<arch>.rpm, tcpkit-debuginfo-<v>-1.<arch>.rpm the same binary for RPM distributions
#   tcpkit-<v>-<arch>-static.tar.gz   the static binary (glibc, libbpf, libelf, zlib inside: needs nothing but
#                                the kernel), as the container image has it, with the man pages
#
#   scripts/package.sh [--arch x86_64|arm64]
#
# Then lintian and rpmlint check them (scripts/lint-packages.sh). Installs cargo-deb (cargo) and rpmbuild
# (apt) when missing, and for a cross build what scripts/setup-cross.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/arch.sh
host=$(uname -m)
set_arch package "$host"
if [ "${1:-}" = "--arch" ]; then set_arch package "${2:-}"; fi
scripts/setup.sh >&2
tools="" # binutils for the target: the build machine's own, or the cross ones
if [ "$arch" != "$host" ]; then
  scripts/setup-cross.sh "$arch" >&2
  tools="$arch-linux-gnu-"
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
pkg=target/pkg
stage=$pkg/stage # what the packages are made of, for this architecture (Cargo.toml's assets point here)
rm -rf "$stage"
rm -f "$pkg"/tcpkit*_"$debarch".deb "$pkg"/tcpkit*_"$debarch".ddeb "$pkg"/tcpkit*."$arch".rpm \
  "$pkg"/tcpkit-*-"$arch"-static.tar.gz
mkdir -p "$stage/man" "$stage/completions" "$stage/bin" "$stage/debug"

# Debian's libelf and zlib of the target (and of this machine, for the libbpf-sys build scripts link).
export_libbpf_library_paths
cargo build --profile dist --locked --target "$triple" --bin tcpkit
bin=target/$triple/dist/tcpkit
static=$(scripts/build-static.sh --arch "$arch")
runnable=$bin # the completions come from the flag definitions, the same on every architecture
if [ "$arch" != "$host" ]; then
  cargo build --release --locked --bin tcpkit
  runnable=target/release/tcpkit
fi

# What the packages ship besides the binary, generated fresh: gzipped man pages (Debian policy) and the
# completion scripts, which come from the binary's own flag definitions.
for page in man/*.8; do gzip -9n < "$page" > "$stage/man/$(basename "$page").gz"; done
"$runnable" completions bash > "$stage/completions/tcpkit.bash"
"$runnable" completions zsh > "$stage/completions/_tcpkit"
"$runnable" completions fish > "$stage/completions/tcpkit.fish"

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v rpmbuild >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rpm; }
# One split of the build for every package: the stripped binary (with a debuglink), and its symbols under
# their build id, where gdb, perf and systemd-coredump look for them.
build_id=$(readelf -n "$bin" | sed -n 's/^ *Build ID: *//p')
[ -n "$build_id" ] || { echo "package: $bin has no build id" >&2; exit 1; }
debug_file="/usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug"
mkdir -p "$stage/debug$(dirname "$debug_file")"
"${tools}objcopy" --only-keep-debug --compress-debug-sections=zlib "$bin" "$stage/debug$debug_file"
chmod 644 "$stage/debug$debug_file"
"${tools}objcopy" --strip-all --remove-section=.comment --add-gnu-debuglink="$stage/debug$debug_file" "$bin" \
  "$stage/bin/tcpkit"

cargo deb --target "$triple" --no-build --no-strip --no-dbgsym --output "$pkg/"
deb="$pkg/tcpkit_${version}-1_$debarch.deb"
deb_version=$(dpkg-deb -f "$deb" Version)
deb_arch=$(dpkg-deb -f "$deb" Architecture)
# tcpkit-dbgsym as debhelper makes one: marked as an automatic debug package, its doc directory a link to
# tcpkit's (which it depends on exactly), so copyright and changelog are tcpkit's.
root="$stage/dbgsym"
mkdir -p "$root/DEBIAN" "$root/usr/share/doc"
cp -a "$stage/debug/usr" "$root/"
ln -s tcpkit "$root/usr/share/doc/tcpkit-dbgsym"
(cd "$root" && find usr -type f -exec md5sum {} +) > "$root/DEBIAN/md5sums"
cat > "$root/DEBIAN/control" <<CONTROL
Package: tcpkit-dbgsym
Source: tcpkit
Version: $deb_version
Auto-Built-Package: debug-symbols
Architecture: $deb_arch
Maintainer: $(dpkg-deb -f "$deb" Maintainer)
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: tcpkit (= $deb_version)
Section: debug
Priority: optional
Description: debug symbols for tcpkit
Build-Ids: $build_id
CONTROL
dpkg-deb --root-owner-group -Zxz --build "$root" "$pkg/tcpkit-dbgsym_${deb_version}_$deb_arch.ddeb" >/dev/null
rm -rf "$root"

# The RPMs, from packaging/tcpkit.spec: rpmbuild packs the same files (and sets every header a
# distribution's rpmlint asks for), Requires from the binary's ELF.
rpmbuild -bb --quiet --target "$arch" --define "_topdir $PWD/$stage/rpmbuild" --define "pkgdir $PWD/$stage" \
  --define "srcdir $PWD" --define "tcpkit_version $version" packaging/tcpkit.spec
mv "$stage/rpmbuild/RPMS/$arch"/*.rpm "$pkg/"

# The static binary, stripped, for machines without a package manager of these kinds.
dir="tcpkit-$version-$arch-static"
mkdir -p "$stage/$dir"
"${tools}strip" -o "$stage/$dir/tcpkit" "$static"
cp man/*.8 LICENSE README.md "$stage/$dir/"
tar -C "$stage" --owner=0 --group=0 --sort=name -czf "$pkg/$dir.tar.gz" "$dir"
ls -1 "$pkg"/tcpkit*_"$debarch".deb "$pkg"/tcpkit*_"$debarch".ddeb "$pkg"/tcpkit*."$arch".rpm "$pkg/$dir.tar.gz"
