#!/usr/bin/env bash
# Runs every check and test of the project; this is what CI runs.
# Installs what the tests need first (pinned npm and PyPI packages, see tests/setup.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

tests/setup.sh
# A clean clone gains nothing from incremental state; it only costs disk (~3 GB).
if [[ "${CI:-}" == "true" ]]; then export CARGO_INCREMENTAL=0; fi
echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "[test] building the workspace (berth, fixtures)"
cargo build --workspace --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
