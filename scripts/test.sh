#!/usr/bin/env bash
# Run the whole test suite against the real services (the README's test command). Changes
# nothing on the machine: says what is missing (scripts/setup.sh, as root, provides it) and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/serveractions/target}"

# What scripts/setup.sh installs and starts; keep the two in sync.
missing=0
need() { echo "test.sh: missing $1: scripts/setup.sh (as root) ${2:-installs} it" >&2; missing=1; }
[ -x /usr/sbin/sshd ] || need "/usr/sbin/sshd (openssh-server)"
[ -d /run/sshd ] || need "/run/sshd (sshd's privilege separation directory)" makes
command -v ssh-keygen >/dev/null || need "ssh-keygen (openssh-client)"
command -v psql >/dev/null || need "psql (postgresql-client)"
command -v pgrep >/dev/null || need "pgrep (procps)"
[ -x /usr/sbin/mariadbd ] || need "/usr/sbin/mariadbd (mariadb-server)"
command -v mariadb-install-db >/dev/null || need "mariadb-install-db (mariadb-server)"
command -v mariadb-backup >/dev/null || need "mariadb-backup"
command -v mkfs.btrfs >/dev/null || need "mkfs.btrfs (btrfs-progs)"
command -v zstd >/dev/null || need "zstd"
[ -x /usr/bin/chromium ] || need "/usr/bin/chromium (chromium)"
command -v chromedriver >/dev/null || need "chromedriver (chromium-driver)"
command -v docker-compose >/dev/null || need "docker-compose"
command -v knotd >/dev/null || need "knotd (knot)"
command -v kdig >/dev/null && command -v knsupdate >/dev/null || need "kdig, knsupdate (knot-dnsutils)"
command -v sudo >/dev/null || need "sudo"
[ -f /etc/sudoers.d/serveractions-testbed ] || need "/etc/sudoers.d/serveractions-testbed (satest may run apt-get)" writes
ls /var/cache/serveractions/debs/figlet_*.deb >/dev/null 2>&1 || need "figlet's .deb in /var/cache/serveractions/debs" fetches
python3 -c 'import moto.server, sys; v = tuple(int(x) for x in moto.__version__.split(".")[:3]); sys.exit(v < (5, 2, 5))' 2>/dev/null \
  || need "python3 module moto.server >= 5.2.5 (moto[server])"
command -v cargo-nextest >/dev/null || need "cargo-nextest"
command -v schemathesis >/dev/null || need "schemathesis (PyPI)"
command -v cargo-machete >/dev/null || need "cargo-machete"
pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || need "PostgreSQL on 127.0.0.1:5432 (pg_isready)" starts
rabbitmqctl -q status >/dev/null 2>&1 || need "RabbitMQ (rabbitmqctl -q status)" starts
if ss -ltnH 'sport = :22' 2>/dev/null | awk '{print $4}' | grep -qE '^(0\.0\.0\.0|\*|\[::\]):22$'; then
  echo "test.sh: something listens on *:22 (the test hosts need port 22 of their own addresses): scripts/setup.sh (as root) stops the system sshd" >&2
  missing=1
fi
[ "$missing" = 0 ] || exit 1

docker-compose -f docker-compose.yml config -q
cargo fmt --all -- --check
cargo machete
cargo clippy --workspace --all-targets -- -D warnings
cargo build --bins
scripts/api-contract.sh
cargo nextest run --workspace --no-fail-fast "$@"
