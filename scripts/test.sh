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
# The tests start login shells (the local backend reads the profile, as hermes-agent does) by
# the hundred, and kill some of them mid-start. They get a home of their own, not the account's:
# the machine's dotfiles may do anything at every login (on the CI machine root's runs
# `pyenv rehash`, whose lock file, once a killed shell leaves it behind, stalls every later login
# for 60 s). cargo and rustup keep finding their own homes.
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
test_home="$PWD/target/test-home"
rm -rf "$test_home"
mkdir -p "$test_home"
if cargo nextest --version >/dev/null 2>&1; then
  HOME="$test_home" cargo nextest run --workspace --locked --profile ci
else
  HOME="$test_home" cargo test --workspace --locked
fi
