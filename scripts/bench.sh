#!/usr/bin/env bash
# The benchmark: release build of every binary, then sa-bench (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/serveractions/target}"
scripts/setup.sh
cargo build --release --bins
exec "$CARGO_TARGET_DIR/release/sa-bench" "$@"
