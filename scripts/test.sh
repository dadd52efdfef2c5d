#!/usr/bin/env bash
# Run the whole test suite against the real services (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/serveractions/target}"
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --bins
cargo nextest run --workspace --no-fail-fast "$@"
