#!/usr/bin/env bash
# The MySQL manager's and the backups' benchmark (sa-bench-db: promote, switchover window under
# sysbench, db_checksum vs pt-table-checksum, read-lock hold, 2 GiB backup vs its baselines):
# installs sysbench and percona-toolkit if missing, then as scripts/bench.sh.
set -euo pipefail
need=()
command -v sysbench >/dev/null || need+=(sysbench)
command -v pt-table-checksum >/dev/null || need+=(percona-toolkit)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
SA_BENCH_BIN=sa-bench-db exec "$(dirname "$0")/bench.sh" "$@"
