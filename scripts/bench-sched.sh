#!/usr/bin/env bash
# The scheduler's benchmark: sa-bench-sched (3 sa-api replicas, 100 schedules with 1-second
# slots, 30 s; arguments pass through).
SA_BENCH_BIN=sa-bench-sched exec "$(dirname "$0")/bench.sh" "$@"
