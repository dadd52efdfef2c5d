#!/bin/sh
set -e
d=$1; addr=$2
id=$(echo "$addr" | awk -F. '{print 300000 + $3 * 256 + $4}')
mkdir -p "$d/data" "$d/tmp" "$d/conf.d"
cat > "$d/my.cnf" <<EOF
[mysqld]
datadir=$d/data
bind-address=$addr
port=3306
socket=$d/mysqld.sock
pid-file=$d/mysqld.pid
log-error=$d/error.log
tmpdir=$d/tmp
log-bin=bin
server-id=$id
log-slave-updates=1
binlog-format=ROW
gtid-strict-mode=1
skip-name-resolve
!includedir $d/conf.d
EOF
cat > "$d/ctl" <<EOF
#!/bin/sh
stop() { if [ -s $d/mysqld.pid ]; then kill "\$(cat $d/mysqld.pid)" 2>/dev/null; fi
  i=0; while [ -e $d/mysqld.pid ]; do sleep 0.1; i=\$((i+1)); [ \$i -gt 600 ] && exit 1; done; return 0; }
start() { setsid /usr/sbin/mariadbd --defaults-file=$d/my.cnf </dev/null >/dev/null 2>&1 & }
case "\$1" in start) start;; stop) stop;; restart) stop; start;; esac
EOF
chmod 755 "$d/ctl"
mariadb-install-db --no-defaults --auth-root-authentication-method=normal --skip-test-db \
  --datadir="$d/data" --tmpdir="$d/tmp" >/dev/null
"$d/ctl" start
echo "mariadb installed in $d"
