#!/usr/bin/env bash
# The MySQL manager's benchmark (promote, switchover window under sysbench, db_checksum vs
# pt-table-checksum): installs sysbench and percona-toolkit if missing, release build, run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/serveractions/target}"
scripts/setup.sh
need=()
command -v sysbench >/dev/null || need+=(sysbench)
command -v pt-table-checksum >/dev/null || need+=(percona-toolkit)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
cargo build --release --bins
exec "$CARGO_TARGET_DIR/release/sa-bench-db" "$@"
