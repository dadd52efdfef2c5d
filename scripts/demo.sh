#!/usr/bin/env bash
# The main job on local test hosts: api + 2 workers + 2 test hosts, a few script actions, their
# logs; then the 2007 incident on three MariaDB test hosts, an S3 emulator and a Knot DNS server
# (backup, the master dies, the watcher fails over on its own, the DNS answer moves, the spare
# becomes a slave from the backup); and the URLs to look at (`--keep` leaves it
# running, `--no-db` skips the database scene).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/serveractions/target}"
scripts/setup.sh
cargo build --bins
exec "$CARGO_TARGET_DIR/debug/sa-demo" "$@"
