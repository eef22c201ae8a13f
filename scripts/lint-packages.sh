#!/usr/bin/env bash
# CI, after scripts/package.sh: lintian on each .deb and .ddeb and rpmlint on each .rpm in target/pkg/. Any
# lintian error or warning fails; an rpmlint error fails, and so does a warning that packaging/rpmlint.toml
# does not filter (each filter there says why the package is right). Installs the linters when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v lintian >/dev/null || ! command -v rpmlint >/dev/null || ! command -v rpm >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends lintian rpmlint rpm >/dev/null
fi
status=0
for deb in target/pkg/*.deb target/pkg/*.ddeb; do
  echo "== lintian $deb"
  # --fail-on error,warning: a warning is as much a finding as an error here.
  lintian --fail-on error,warning --display-info "$deb" || status=1
done
for rpm in target/pkg/*.rpm; do
  echo "== rpmlint $rpm"
  # rpmlint exits 0 on warnings: any E: or W: line it prints (after the filters) is a finding.
  out=$(rpmlint --config packaging/rpmlint.toml "$rpm" 2>&1) || status=1
  echo "$out"
  if grep -q ': [EW]: ' <<<"$out"; then status=1; fi
done
[ "$status" = 0 ] && echo "lint-packages: no findings" || echo "lint-packages: findings above" >&2
exit "$status"
