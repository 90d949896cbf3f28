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
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci
else
  cargo test --workspace --locked
fi
