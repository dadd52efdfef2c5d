#!/usr/bin/env bash
# The benchmark: release build of every binary, then sa-bench (arguments pass through).
# SA_BENCH_BIN picks another benchmark binary (scripts/bench-db.sh, scripts/bench-sched.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/serveractions/target}"
scripts/setup.sh
cargo build --release --bins
exec "$CARGO_TARGET_DIR/release/${SA_BENCH_BIN:-sa-bench}" "$@"
