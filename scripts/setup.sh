#!/usr/bin/env bash
# Make this machine ready for the demo, the tests and the benchmark (idempotent; run as root):
# install what is missing, start PostgreSQL and RabbitMQ if they are down. scripts/test.sh checks
# the same list; keep the two in sync.
set -euo pipefail

log() { echo "setup: $*" >&2; }

need_pkgs=()
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v ssh-keygen >/dev/null || need_pkgs+=(openssh-client)
command -v psql >/dev/null || need_pkgs+=(postgresql-client)
command -v pgrep >/dev/null || need_pkgs+=(procps)
[ -x /usr/sbin/mariadbd ] && command -v mariadb-install-db >/dev/null || need_pkgs+=(mariadb-server)  # test hosts' own mariadbd
command -v mariadb-backup >/dev/null || need_pkgs+=(mariadb-backup)   # the mariabackup strategy
command -v mkfs.btrfs >/dev/null || need_pkgs+=(btrfs-progs)          # snapshot backups on test hosts
command -v zstd >/dev/null || need_pkgs+=(zstd)                       # backup compression
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)          # the viewer's browser tests
command -v chromedriver >/dev/null || need_pkgs+=(chromium-driver)
command -v docker-compose >/dev/null || need_pkgs+=(docker-compose)  # test.sh checks docker-compose.yml
command -v knotd >/dev/null || need_pkgs+=(knot)                      # RFC 2136 DNS tests (their own knotd)
command -v kdig >/dev/null && command -v knsupdate >/dev/null || need_pkgs+=(knot-dnsutils)
command -v sudo >/dev/null || need_pkgs+=(sudo)                      # scripts' packages as the SSH user
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${need_pkgs[@]}" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q "${need_pkgs[@]}" >/dev/null
  }
fi
mkdir -p /run/sshd
# A stored script's packages are installed by the test hosts' login user through `sudo -n`
# (apt-get only); the package the tests install (figlet) is fetched here, so the test itself
# needs no network.
if [ ! -f /etc/sudoers.d/serveractions-testbed ]; then
  log "allowing the test hosts' user satest to run apt-get through sudo"
  echo 'satest ALL=(root) NOPASSWD: /usr/bin/apt-get' > /etc/sudoers.d/serveractions-testbed
  chmod 0440 /etc/sudoers.d/serveractions-testbed
fi
# apt may clean its own cache after an install: the test keeps its copy here and puts it back.
if ! ls /var/cache/serveractions/debs/figlet_*.deb >/dev/null 2>&1; then
  log "fetching figlet (the package the scripts tests install)"
  mkdir -p /var/cache/serveractions/debs
  (cd /var/cache/serveractions/debs && { apt-get download -q figlet >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get download -q figlet >/dev/null; }; })
fi

# S3 on loopback for the backup tests: moto >= 5.2.5 (5.2.1 breaks multipart completion).
# The tests run it as `python3 -m moto.server`, with the python3 on PATH.
if ! python3 -c 'import moto.server, sys; v = tuple(int(x) for x in moto.__version__.split(".")[:3]); sys.exit(v < (5, 2, 5))' 2>/dev/null; then
  log "installing moto[server]>=5.2.5"
  python3 -m pip install -q 'moto[server]>=5.2.5' >/dev/null 2>&1 \
    || python3 -m pip install -q --break-system-packages 'moto[server]>=5.2.5'
fi
# The HTTP contract check (scripts/api-contract.sh).
if ! command -v schemathesis >/dev/null 2>&1; then
  log "installing schemathesis"
  python3 -m pip install -q 'schemathesis>=4,<5' >/dev/null 2>&1 \
    || python3 -m pip install -q --break-system-packages 'schemathesis>=4,<5'
fi
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
if ! command -v cargo-machete >/dev/null 2>&1; then
  log "installing cargo-machete"
  cargo install --locked cargo-machete >/dev/null 2>&1
fi
log "ready"
