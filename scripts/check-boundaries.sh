#!/usr/bin/env bash
# Architecture invariants on crate dependencies (see ARCHITECTURE.md). Each line names a crate and
# a package it must never reach through normal dependencies. `cargo tree -i` prints the package's
# inverted tree only when it is reachable (it fails for a package not in the lock file at all, and
# prints nothing for one in the workspace but not reachable), so any output is a violation.
set -uo pipefail
cd "$(dirname "$0")/.."

status=0
forbid() {
  local crate=$1 package=$2 why=$3
  local tree
  tree=$(cargo tree --offline -q -p "$crate" -e normal -i "$package" 2>/dev/null) || tree=""
  if [ -n "$tree" ]; then
    echo "boundary violated: $crate depends on $package ($why):" >&2
    echo "$tree" >&2
    status=1
  fi
}

forbid slotbox-protocol tokio "the protocol crate is plain data"
forbid slotbox-protocol slotbox-exec "the protocol crate is a leaf"
# The execution core serves and calls no HTTP API of slotbox's; the one HTTP client it has is
# bollard, the Docker Engine's (the docker backend), which brings hyper and http along.
for http in axum reqwest tower; do
  forbid slotbox-exec "$http" "the execution core serves and calls no slotbox HTTP API"
done
forbid slotbox-exec slotbox-test-support "test support is a dev-dependency only"
forbid slotbox-cli slotbox-test-support "test support is a dev-dependency only"
forbid slotbox-server slotbox-test-support "test support is a dev-dependency only"
forbid slotbox-pool slotbox-exec "the pool never runs commands; it talks to sandbox servers over HTTP"
forbid slotbox-pool slotbox-server "the pool reaches servers only through their HTTP API"
forbid slotbox-client slotbox-exec "the client speaks HTTP only; it never runs commands"
forbid slotbox-client slotbox-server "the client speaks HTTP only"
forbid slotbox-protocol axum "the protocol crate is plain data"
for crate in slotbox-exec slotbox-server slotbox-pool; do
  forbid slotbox-rollout "$crate" "the rollout engine reaches slots only through the v1 API (slotbox-client)"
done
forbid slotbox-rollout slotbox-fake-openai "the fake model is for tests and benchmarks only"
forbid slotbox-rollout slotbox-test-support "test support is a dev-dependency only"
forbid slotbox-toolcall tokio "tool-call parsing is pure: no runtime, no I/O"
forbid slotbox-toolcall reqwest "tool-call parsing is pure: no runtime, no I/O"
forbid slotbox-fake-openai slotbox-rollout "the fake model is an independent oracle of the protocol"
forbid slotbox-fake-openai slotbox-toolcall "the fake model is an independent oracle of the protocol"

if [ $status -eq 0 ]; then
  echo "crate boundaries: ok"
fi
exit $status
