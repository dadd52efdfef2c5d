#!/usr/bin/env bash
# This code against an earlier commit, measured in one run on this machine: release builds of
# both (the earlier one in a temporary worktree), then `sa-bench --parts cd` (no-op action
# throughput, a 1M-line log) ROUNDS times (3) for each, alternating old and new (this machine's
# figures move by 10-20% from run to run), and `sa-bench-db --parts k` (a 2 GiB backup, itself
# the median of 3 rounds) once each; the medians and the ratios new/old.
# Usage: scripts/bench-compare.sh BASE_COMMIT (default: HEAD~1); SA_COMPARE_BACKUP=0 skips (k).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-HEAD~1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/serveractions/target}"
scripts/setup.sh
command -v sysbench >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q sysbench >/dev/null
work=$(mktemp -d)
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/base" "$base" >/dev/null
build() { # $1: source dir, $2: where the binaries go
  (cd "$1" && cargo build --release --bins -q)
  mkdir -p "$2"
  find "$CARGO_TARGET_DIR/release" -maxdepth 1 -type f -executable \( -name 'sa-*' -o -name sactl \) -exec cp {} "$2/" \;
}
build "$work/base" "$work/old"
build . "$work/new"
for i in $(seq 1 "${ROUNDS:-3}"); do
  for v in old new; do
    echo "=== $v, round $i"
    "$work/$v/sa-bench" --parts cd | tee -a "$work/$v.cd"
  done
done
# SA_COMPARE_BACKUP=0 leaves out (k), the longest part.
if [ "${SA_COMPARE_BACKUP:-1}" = 1 ]; then
  for v in old new; do
    echo "=== $v"
    "$work/$v/sa-bench-db" --parts k 2>/dev/null | grep -E '^\(k\)|round' | tee "$work/$v.k"
  done
fi
# The median of the numbers matching $2 in file $1.
median() {
  grep -oE "$2" "$1" | grep -oE '[0-9]+(\.[0-9]+)?$' | sort -n \
    | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
c='\(c\)[^0-9]*[0-9.]+'; d='all lines stored: [0-9.]+'; k='rounds: [0-9.]+'
echo "=== new / $base (medians)"
awk -v a="$(median "$work/new.cd" "$c")" -v b="$(median "$work/old.cd" "$c")" \
  'BEGIN { printf "(c) throughput: %s / %s actions/s = %.3f (target >= 0.95)\n", a, b, a / b }'
awk -v a="$(median "$work/new.cd" "$d")" -v b="$(median "$work/old.cd" "$d")" \
  'BEGIN { printf "(d) 1M-line log: %s / %s s = %.3f (target <= 1.05)\n", a, b, a / b }'
if [ "${SA_COMPARE_BACKUP:-1}" = 1 ]; then
  awk -v a="$(median "$work/new.k" "$k")" -v b="$(median "$work/old.k" "$k")" \
    'BEGIN { printf "(k) 2 GiB backup: %s / %s s = %.3f\n", a, b, a / b }'
fi
