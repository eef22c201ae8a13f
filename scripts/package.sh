#!/usr/bin/env bash
# Builds the Debian and RPM packages of tcpkit into target/pkg/: the static binary as /usr/sbin/tcpkit, the
# man pages, bash/zsh/fish completions and the copyright notice. Installs cargo-deb and cargo-generate-rpm
# with cargo when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/build-static.sh)
triple="$(uname -m)-unknown-linux-gnu"

# What the packages ship besides the binary, generated fresh: gzipped man pages (Debian policy) and the
# completion scripts, which come from the binary's own flag definitions.
pkg=target/pkg
rm -rf "$pkg"
mkdir -p "$pkg/man" "$pkg/completions"
for page in man/*.8; do gzip -9n < "$page" > "$pkg/man/$(basename "$page").gz"; done
"$bin" completions bash > "$pkg/completions/tcpkit.bash"
"$bin" completions zsh > "$pkg/completions/_tcpkit"
"$bin" completions fish > "$pkg/completions/tcpkit.fish"

for tool in cargo-deb cargo-generate-rpm; do
  command -v "$tool" >/dev/null || cargo install --locked "$tool"
done
cargo deb --no-build --no-strip --target "$triple" --output "$pkg/"
cargo generate-rpm --target "$triple" --output "$pkg/"
ls -1 "$pkg"/*.deb "$pkg"/*.rpm
