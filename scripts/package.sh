#!/usr/bin/env bash
# Builds tcpkit's packages for this machine's architecture into target/pkg/:
#   tcpkit_<v>-1_<arch>.deb, tcpkit-dbgsym_<v>-1_<arch>.ddeb   Debian's way: libelf and zlib from the distro
#                                (Depends from dpkg-shlibdeps), libbpf linked in, stripped; symbols apart
#   tcpkit-<v>-1.<arch>.rpm, tcpkit-debuginfo-<v>-1.<arch>.rpm the same binary for RPM distributions
#   tcpkit-<v>-<arch>-static.tar.gz   the static binary (glibc, libbpf, libelf, zlib inside: needs nothing but
#                                the kernel), as the container image has it, with the man pages
# Then lintian and rpmlint check them (scripts/lint-packages.sh). Installs cargo-deb (cargo) and rpmbuild
# (apt) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(uname -m)
pkg=target/pkg
rm -rf "$pkg"
mkdir -p "$pkg/man" "$pkg/completions" "$pkg/bin" "$pkg/debug"

cargo build --profile dist --locked --bin tcpkit
bin=target/dist/tcpkit
static=$(scripts/build-static.sh)

# What the packages ship besides the binary, generated fresh: gzipped man pages (Debian policy) and the
# completion scripts, which come from the binary's own flag definitions.
for page in man/*.8; do gzip -9n < "$page" > "$pkg/man/$(basename "$page").gz"; done
"$bin" completions bash > "$pkg/completions/tcpkit.bash"
"$bin" completions zsh > "$pkg/completions/_tcpkit"
"$bin" completions fish > "$pkg/completions/tcpkit.fish"

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v rpmbuild >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rpm; }
# One split of the build for every package: the stripped binary (with a debuglink), and its symbols under
# their build id, where gdb, perf and systemd-coredump look for them.
build_id=$(readelf -n "$bin" | sed -n 's/^ *Build ID: *//p')
[ -n "$build_id" ] || { echo "package: $bin has no build id" >&2; exit 1; }
debug_file="/usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug"
mkdir -p "$pkg/debug$(dirname "$debug_file")"
objcopy --only-keep-debug --compress-debug-sections=zlib "$bin" "$pkg/debug$debug_file"
chmod 644 "$pkg/debug$debug_file"
objcopy --strip-all --remove-section=.comment --add-gnu-debuglink="$pkg/debug$debug_file" "$bin" "$pkg/bin/tcpkit"

cargo deb --no-build --no-strip --no-dbgsym --output "$pkg/"
deb_version=$(dpkg-deb -f "$pkg"/tcpkit_*.deb Version)
deb_arch=$(dpkg-deb -f "$pkg"/tcpkit_*.deb Architecture)
# tcpkit-dbgsym as debhelper makes one: marked as an automatic debug package, its doc directory a link to
# tcpkit's (which it depends on exactly), so copyright and changelog are tcpkit's.
root="$pkg/dbgsym"
mkdir -p "$root/DEBIAN" "$root/usr/share/doc"
cp -a "$pkg/debug/usr" "$root/"
ln -s tcpkit "$root/usr/share/doc/tcpkit-dbgsym"
(cd "$root" && find usr -type f -exec md5sum {} +) > "$root/DEBIAN/md5sums"
cat > "$root/DEBIAN/control" <<CONTROL
Package: tcpkit-dbgsym
Source: tcpkit
Version: $deb_version
Auto-Built-Package: debug-symbols
Architecture: $deb_arch
Maintainer: $(dpkg-deb -f "$pkg"/tcpkit_*.deb Maintainer)
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
rpm_arch=$(uname -m)
rpmbuild -bb --quiet --target "$rpm_arch" --define "_topdir $PWD/$pkg/rpmbuild" --define "pkgdir $PWD/$pkg" \
  --define "srcdir $PWD" --define "tcpkit_version $version" packaging/tcpkit.spec
mv "$pkg/rpmbuild/RPMS/$rpm_arch"/*.rpm "$pkg/"
rm -rf "${pkg:?}/rpmbuild"

# The static binary, stripped, for machines without a package manager of these kinds.
dir="tcpkit-$version-$arch-static"
mkdir -p "$pkg/$dir"
strip -o "$pkg/$dir/tcpkit" "$static"
cp man/*.8 LICENSE README.md "$pkg/$dir/"
tar -C "$pkg" --owner=0 --group=0 --sort=name -czf "$pkg/$dir.tar.gz" "$dir"
rm -rf "${pkg:?}/$dir"
ls -1 "$pkg"/*.deb "$pkg"/*.ddeb "$pkg"/*.rpm "$pkg"/*.tar.gz
