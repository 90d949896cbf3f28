#!/usr/bin/env bash
# Installs what slotbox needs on a fresh Debian/Ubuntu machine: bash and bubblewrap, the OpenSSH
# client (ssh backend) and server (its tests), and python3 (the seed-client compatibility test).
# Idempotent: installs only what is missing. Needs root (or sudo) only when something is missing.
set -euo pipefail

missing=()
command -v bash >/dev/null 2>&1 || missing+=(bash)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v setsid >/dev/null 2>&1 || missing+=(util-linux)
# The ssh backend's client, and the sshd its tests run on loopback.
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing ${missing[*]}, and no apt-get here: install them with your package manager" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
