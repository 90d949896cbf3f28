#!/usr/bin/env bash
# The main job, for now: build slotbox and show `slotbox exec` in a bubblewrap sandbox.
# (Becomes `slotbox up`, the slot pool, once it exists.)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --locked -p slotbox-cli
slotbox=target/release/slotbox
workspace=$(mktemp -d)
trap 'rm -rf "$workspace"' EXIT

step() { printf '\n$ %s\n' "$*"; "$@" || printf '\n(exit code %s)\n' "$?"; }
step "$slotbox" exec -- echo hi
step "$slotbox" exec --backend bwrap --workspace "$workspace" -- 'echo "in the sandbox: $(hostname), pid $$, cwd $PWD"; ls /; touch /etc/x'
step "$slotbox" exec --backend bwrap --workspace "$workspace" --timeout 1 -- 'echo working; sleep 30'
step "$slotbox" exec --backend bwrap --workspace "$workspace" --max-output-chars 120 -- 'seq 1 100000'
step "$slotbox" exec --backend bwrap --workspace "$workspace" --json -- 'mkdir -p project && cd project && printf "h\xc3\xa9llo"'
