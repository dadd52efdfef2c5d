#!/usr/bin/env bash
# Make this machine ready for the demo, the tests and the benchmark (idempotent; run as root):
# install what is missing, start PostgreSQL and RabbitMQ if they are down.
set -euo pipefail

log() { echo "setup: $*" >&2; }

need_pkgs=()
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v ssh-keygen >/dev/null || need_pkgs+=(openssh-client)
command -v psql >/dev/null || need_pkgs+=(postgresql-client)
command -v pgrep >/dev/null || need_pkgs+=(procps)
[ -x /usr/sbin/mariadbd ] && command -v mariadb-install-db >/dev/null || need_pkgs+=(mariadb-server)  # test hosts' own mariadbd
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)          # the viewer's browser tests
command -v chromedriver >/dev/null || need_pkgs+=(chromium-driver)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${need_pkgs[@]}" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q "${need_pkgs[@]}" >/dev/null
  }
fi
mkdir -p /run/sshd
# The Debian package may start a system sshd on *:22, which would take port 22 of every test
# host address; the test hosts run their own sshd per loopback address instead.
if ss -ltnH 'sport = :22' 2>/dev/null | awk '{print $4}' | grep -qE '^(0\.0\.0\.0|\*|\[::\]):22$'; then
  log "stopping the system sshd on *:22 (test hosts need port 22 of their own addresses)"
  service ssh stop >/dev/null 2>&1 || pkill -f '^sshd: /usr/sbin/sshd' || true
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 >/dev/null

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-server -detached
  rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1 || sleep 10
fi
rabbitmqctl -q status >/dev/null

if ! command -v cargo-nextest >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest >/dev/null 2>&1
fi
log "ready"
