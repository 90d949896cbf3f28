#!/usr/bin/env bash
# Builds the sandbox-server image on this machine, with no registry: a Debian root filesystem
# made with debootstrap and imported into Docker once (cached by its recipe), then a thin layer
# with the slotbox binary and the entry point (images/sandbox/).
#
#   bash scripts/build-image.sh [--binary PATH] [--tag TAG] [--suite bookworm] [--mirror URL]
#                               [--packages a,b,c]
#
# The binary is linked against glibc: build it on a system no newer than the image's suite
# (this project builds on Debian bookworm, the default suite).
set -euo pipefail
cd "$(dirname "$0")/.."

binary=target/release/slotbox
tag=slotbox-sandbox:latest
suite=bookworm
mirror=http://deb.debian.org/debian
# What an agent's commands commonly expect, besides bash and bubblewrap (slot isolation).
packages=bubblewrap,ca-certificates,procps,git,curl,python3,less,xz-utils
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --suite) suite=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --packages) packages=$2; shift 2 ;;
    *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "build-image: no slotbox binary at $binary (cargo build --release -p slotbox-cli)" >&2; exit 1; }
command -v docker >/dev/null || { echo "build-image: no docker client" >&2; exit 1; }

# The root filesystem is cached under a tag derived from its recipe.
recipe_hash=$(printf '%s\n' "$suite" "$mirror" "$packages" "rootfs-v1" | sha256sum | cut -c1-12)
rootfs_tag="slotbox-rootfs:$suite-$recipe_hash"
# debootstrap, and the root-owned tree it makes, need root.
sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
if ! docker image inspect "$rootfs_tag" >/dev/null 2>&1; then
  if ! command -v debootstrap >/dev/null; then
    echo "build-image: installing debootstrap" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq debootstrap >/dev/null
  fi
  work=$(mktemp -d)
  trap '"${sudo[@]}" rm -rf "$work"' EXIT
  echo "build-image: debootstrap $suite ($packages) — once per recipe" >&2
  "${sudo[@]}" debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  "${sudo[@]}" sh -c 'rm -rf "$1"/rootfs/var/cache/apt/archives/*.deb "$1"/rootfs/var/lib/apt/lists/*' sh "$work"
  "${sudo[@]}" tar -C "$work/rootfs" --numeric-owner -c . | docker import - "$rootfs_tag" >/dev/null
  "${sudo[@]}" rm -rf "$work"
  trap - EXIT
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp images/sandbox/Dockerfile images/sandbox/entrypoint.sh "$context/"
cp "$binary" "$context/slotbox"
docker build -q --build-arg ROOTFS="$rootfs_tag" -t "$tag" "$context" >/dev/null
echo "build-image: built $tag (root filesystem $rootfs_tag)" >&2
