#!/usr/bin/env bash
# The main job on local test hosts: api + 2 workers + 2 test hosts, a few script actions, their
# logs and the URLs to look at (`scripts/demo.sh --keep` leaves it running).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/serveractions/target}"
scripts/setup.sh
cargo build --bins
exec "$CARGO_TARGET_DIR/debug/sa-demo" "$@"
