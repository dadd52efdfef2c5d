#!/usr/bin/env bash
# The fleet-runs benchmark (sa-bench-runs): (A) `uname -a` fanned out to 100 test hosts by one
# run, cold and warm, against Ansible ad-hoc (raw, ControlPersist, pipelining, 100 forks) cold
# and warm and against `xargs -P 100 ssh`; (B) a run of 3000 no-op actions at C = 16 against the
# native-mux floor. A release build, as scripts/bench.sh: (B) is bound by our own CPU.
# Installs ansible-core into a venv under /var/cache/serveractions once (SA_BENCH_ANSIBLE set
# beforehand picks another `ansible`; set to empty, it skips Ansible). Arguments go to the
# binary (--parts ab --fanout-hosts 100 --hosts 10 --names-per-host 300 --concurrency 16
# --rounds 2 by default).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/serveractions/target}"
scripts/setup.sh
# ansible-core refuses to start without a UTF-8 locale.
export LC_ALL=C.UTF-8 LANG=C.UTF-8
if [ -z "${SA_BENCH_ANSIBLE+set}" ]; then
  venv=/var/cache/serveractions/ansible-venv
  if ! "$venv/bin/ansible" --version >/dev/null 2>&1; then
    echo "bench-runs: installing ansible-core into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" 2>/dev/null || {
      # Debian's python3 needs python3-venv (ensurepip) for it.
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null 2>&1 || {
        apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
      }
      rm -rf "$venv"
      python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q ansible-core
    "$venv/bin/ansible" --version >/dev/null
  fi
  export SA_BENCH_ANSIBLE="$venv/bin/ansible"
fi
cargo build --release --bins
export RUST_LOG="${RUST_LOG:-warn}"
exec "$CARGO_TARGET_DIR/release/sa-bench-runs" "$@"
