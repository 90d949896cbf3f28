#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, then formatting, lints,
# crate boundaries and every test against real bash and real bubblewrap.
# With CI=true (or SLOTBOX_REQUIRE_REAL_PARTS=1) a test whose real part is missing fails instead
# of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
bash scripts/check-boundaries.sh
# A Python client speaking the seed server's protocol, against the real `slotbox serve`.
cargo build --locked -p slotbox-cli
python3 -m unittest discover -s tests/seed_client
# The sandbox-server image for the docker scheduler's tests, from the binary just built (the
# Debian root filesystem under it is built once per machine and cached by the engine).
if docker info >/dev/null 2>&1; then
  bash scripts/build-image.sh --binary target/debug/slotbox --tag slotbox-sandbox:test
elif [ "${CI:-}" = "true" ] || [ "${SLOTBOX_REQUIRE_REAL_PARTS:-}" = "1" ]; then
  echo "test.sh: the Docker Engine is required in CI but unreachable" >&2
  exit 1
else
  echo "test.sh: no Docker Engine; the docker tests will skip" >&2
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci
else
  cargo test --workspace --locked
fi
