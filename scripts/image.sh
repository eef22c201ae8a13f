#!/usr/bin/env bash
# Builds tcpkit's container image (deploy/Containerfile: FROM scratch, the static binary alone) with podman,
# or docker when podman is missing, and tags it tcpkit:VERSION and tcpkit:latest, or the tag given.
# Prints the tag. Needs no network: the image has no base to pull.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag="${1:-tcpkit:$version}"
engine=$(command -v podman || command -v docker || true)
if [ -z "$engine" ]; then
  echo "image: neither podman nor docker is installed (apt-get install podman)" >&2
  exit 1
fi
bin=$(scripts/build-static.sh)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp deploy/Containerfile "$bin" "$context/"
extra=()
[ "$#" -eq 0 ] && extra=(--tag tcpkit:latest)
"$engine" build --quiet --build-arg "VERSION=$version" --tag "$tag" "${extra[@]}" --file "$context/Containerfile" "$context" >&2
echo "$tag"
