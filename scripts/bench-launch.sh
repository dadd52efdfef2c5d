#!/usr/bin/env bash
# The launch benchmark (sa-bench-launch): db_launch_slave's wall time broken into launch → SSH
# ready (minus the test bed's boot), mysqld, seeding and catch-up; then 10 concurrent launches.
# EC2 is moto, the hypervisor the test bed's. A debug build: these figures are bound by EC2
# calls, SSH handshakes and MariaDB, not by our CPU. Arguments go to the binary
# (--rounds 3 --concurrent 10 by default).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/serveractions/target}"
scripts/setup.sh
cargo build --bins
export RUST_LOG="${RUST_LOG:-warn}"
exec "$CARGO_TARGET_DIR/debug/sa-bench-launch" "$@"
