#!/usr/bin/env bash
# The automatic-failover benchmark (sa-bench-failover): rounds of a master killed under a client
# that writes through a Knot-served name every 10 ms (detection, writable, DNS, client RTO, lost
# writes; async then semi_sync), then a soak of glitches that must not fail over. As
# scripts/bench.sh: setup, release build, then the binary with these arguments
# (--rounds 10 --semi-sync-rounds 10 --soak 200 by default).
set -euo pipefail
SA_BENCH_BIN=sa-bench-failover exec "$(dirname "$0")/bench.sh" "$@"
