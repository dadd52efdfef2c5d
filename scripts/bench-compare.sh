#!/usr/bin/env bash
# This code against an earlier commit, measured in one run on this machine: release builds of
# both (the earlier one in a temporary worktree), then for each `sa-bench --parts cd` (no-op
# action throughput, a 1M-line log) and `sa-bench-db --parts k` (a 2 GiB backup), and the
# ratios new/old. Usage: scripts/bench-compare.sh BASE_COMMIT (default: HEAD~1).
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
for v in old new; do
  echo "=== $v"
  "$work/$v/sa-bench" --parts cd | tee "$work/$v.cd"
  "$work/$v/sa-bench-db" --parts k 2>/dev/null | grep -E '^\(k\)|round' | tee "$work/$v.k"
done
num() { grep -oE "$2" "$1" | head -1 | grep -oE '[0-9]+(\.[0-9]+)?' | head -1; }
c_old=$(num "$work/old.cd" '\(c\)[^0-9]*[0-9.]+'); c_new=$(num "$work/new.cd" '\(c\)[^0-9]*[0-9.]+')
d_old=$(num "$work/old.cd" 'all lines stored: [0-9.]+'); d_new=$(num "$work/new.cd" 'all lines stored: [0-9.]+')
k_old=$(num "$work/old.k" 'rounds: [0-9.]+'); k_new=$(num "$work/new.k" 'rounds: [0-9.]+')
echo "=== new / $base"
awk -v a="$c_new" -v b="$c_old" 'BEGIN { printf "(c) throughput: %s / %s actions/s = %.3f (target >= 0.95)\n", a, b, a / b }'
awk -v a="$d_new" -v b="$d_old" 'BEGIN { printf "(d) 1M-line log: %s / %s s = %.3f (target <= 1.05)\n", a, b, a / b }'
awk -v a="$k_new" -v b="$k_old" 'BEGIN { printf "(k) 2 GiB backup: %s / %s s = %.3f (median of 3 rounds each)\n", a, b, a / b }'
