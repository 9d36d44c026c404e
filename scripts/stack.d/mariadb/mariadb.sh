# Sourced by scripts/stack (it sets HOST, STATE, START_TIMEOUT and the helpers say, die,
# pid_alive, port_open, wait_for, fail_with_log, stop_pid): a project-local MariaDB, the
# MySQL-family source of the stack.
#
# Its own datadir ($STATE/mariadb/data) and port (CDC_RECON_STACK_MARIADB_PORT, 13306),
# loopback only, the binlog in ROW format with full row images and GTIDs (what Debezium's
# MariaDB connector reads), a `source` database, and two accounts without a password
# (a development stack on loopback, like the PostgreSQL cluster): `cdc_recon` (all
# privileges: the workload, the trigger change log, re-reads) and `debezium` (the
# replication privileges its connector documents). Installed from Debian's packages when
# `mariadbd` is missing. `CDC_RECON_STACK_MARIADB=0` (or `up --no-mariadb`) leaves it out.
# shellcheck shell=bash

MARIADB_PORT="${CDC_RECON_STACK_MARIADB_PORT:-13306}"
MARIADB_DIR="$STATE/mariadb"
MARIADB_DATA="$MARIADB_DIR/data"
MARIADB_LOG="$MARIADB_DIR/server.log"
MARIADB_SOCK="$MARIADB_DIR/mariadb.sock"
MARIADB_PID="$MARIADB_DIR/mariadb.pid"
MARIADB_CNF="$MARIADB_DIR/my.cnf"
MARIADB_USER=cdc_recon
MARIADB_OFF="$STATE/mariadb.off"  # written by `up --no-mariadb`
WITH_MARIADB="${CDC_RECON_STACK_MARIADB:-1}"

mariadb_bin() { # the server binary, or nothing
    local found
    found=$(command -v mariadbd || true)
    [[ -z "$found" && -x /usr/sbin/mariadbd ]] && found=/usr/sbin/mariadbd
    echo "$found"
}

mariadb_install() {
    [[ -n "$(mariadb_bin)" ]] && command -v mariadb >/dev/null && return
    [[ $(id -u) -eq 0 ]] || die "MariaDB is not installed; run as root or: sudo apt-get install -y mariadb-server"
    say "installing MariaDB from Debian's packages"
    apt-get update -qq >"$STATE/apt-mariadb.log" 2>&1 ||
        fail_with_log mariadb "$STATE/apt-mariadb.log" "apt-get update failed"
    # The package would start a system-wide server on port 3306; this stack runs its own.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq mariadb-server mariadb-client \
        >>"$STATE/apt-mariadb.log" 2>&1 ||
        fail_with_log mariadb "$STATE/apt-mariadb.log" "apt-get install mariadb-server failed"
}

mariadb_client() { # args...  (as root over the socket: the bootstrap account)
    mariadb --no-defaults --protocol=socket --socket="$MARIADB_SOCK" -u root "$@"
}

mariadb_ready() { mariadb-admin --no-defaults --protocol=socket --socket="$MARIADB_SOCK" -u root ping >/dev/null 2>&1; }

mariadb_ready_or_exited() { mariadb_ready || ! kill -0 "$MARIADB_LAUNCHED" 2>/dev/null; }

mariadb_owner_args() { # mariadbd refuses to run as root; the package's `mysql` account then
    if [[ $(id -u) -eq 0 ]]; then echo "--user=mysql"; fi
}

mariadb_config() {
    cat >"$MARIADB_CNF" <<EOF
# Written by scripts/stack; edit the script, not this file.
[mariadbd]
datadir=$MARIADB_DATA
socket=$MARIADB_SOCK
pid-file=$MARIADB_PID
log-error=$MARIADB_LOG
bind-address=$HOST
port=$MARIADB_PORT
skip-name-resolve
# What Debezium reads: the binlog in ROW format, full images, GTIDs (strict: one order).
server-id=1
log-bin=mariadb-bin
binlog_format=ROW
binlog_row_image=FULL
binlog_annotate_row_events=ON
gtid_domain_id=0
gtid_strict_mode=ON
log_slave_updates=ON
expire_logs_days=2
# The change-log triggers of \`cdc-recon source install\` are created with the binlog on.
log_bin_trust_function_creators=ON
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
default-time-zone='+00:00'
max_connections=200
innodb_buffer_pool_size=128M
innodb_log_file_size=64M
performance_schema=OFF
EOF
}

mariadb_initdb() {
    [[ -d "$MARIADB_DATA/mysql" ]] && return
    say "creating a MariaDB datadir in $MARIADB_DATA"
    mkdir -p "$MARIADB_DATA"
    [[ $(id -u) -eq 0 ]] && chown -R mysql: "$MARIADB_DIR"
    # shellcheck disable=SC2046
    mariadb-install-db --no-defaults --datadir="$MARIADB_DATA" $(mariadb_owner_args) \
        --auth-root-authentication-method=normal --skip-test-db \
        >"$MARIADB_DIR/install-db.log" 2>&1 ||
        fail_with_log mariadb "$MARIADB_DIR/install-db.log" "mariadb-install-db failed"
}

mariadb_bootstrap() { # idempotent: the database and the two accounts
    mariadb_client <<EOF || die "could not create the MariaDB database and accounts"
CREATE DATABASE IF NOT EXISTS \`source\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
CREATE USER IF NOT EXISTS '$MARIADB_USER'@'$HOST';
GRANT ALL PRIVILEGES ON *.* TO '$MARIADB_USER'@'$HOST' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'debezium'@'$HOST';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR, LOCK TABLES
    ON *.* TO 'debezium'@'$HOST';
EOF
}

mariadb_up() {
    if [[ "$WITH_MARIADB" == 0 ]]; then
        touch "$MARIADB_OFF"
        return
    fi
    rm -f "$MARIADB_OFF"
    if pid_alive "$MARIADB_PID" && mariadb_ready; then
        say "mariadb already running on $HOST:$MARIADB_PORT (pid $(cat "$MARIADB_PID"))"
        return
    fi
    if port_open "$MARIADB_PORT"; then
        die "port $MARIADB_PORT is taken by a process this script did not start; set CDC_RECON_STACK_MARIADB_PORT"
    fi
    mkdir -p "$MARIADB_DIR"
    mariadb_install
    mariadb_initdb
    mariadb_config
    [[ $(id -u) -eq 0 ]] && chown -R mysql: "$MARIADB_DIR"
    say "starting mariadb on $HOST:$MARIADB_PORT"
    # shellcheck disable=SC2046
    "$(mariadb_bin)" --defaults-file="$MARIADB_CNF" $(mariadb_owner_args) \
        </dev/null >"$MARIADB_DIR/stdout.log" 2>&1 &
    MARIADB_LAUNCHED=$!
    if ! wait_for "$START_TIMEOUT" mariadb mariadb_ready_or_exited; then
        fail_with_log mariadb "$MARIADB_LOG" "no answer on $MARIADB_SOCK within ${START_TIMEOUT}s"
    fi
    kill -0 "$MARIADB_LAUNCHED" 2>/dev/null || fail_with_log mariadb "$MARIADB_LOG" "the server exited"
    mariadb_bootstrap
    say "mariadb ready on $HOST:$MARIADB_PORT (database: source)"
}

mariadb_down() { stop_pid mariadb "$MARIADB_PID"; }

mariadb_version() { mariadb_client -N -e 'SELECT VERSION()' 2>/dev/null; }

mariadb_status() { # prints one line; returns 3 when it should run and does not
    if pid_alive "$MARIADB_PID" && mariadb_ready; then
        echo "mariadb   running  $HOST:$MARIADB_PORT  pid $(cat "$MARIADB_PID")  version $(mariadb_version)"
    elif [[ "$WITH_MARIADB" == 0 || -f "$MARIADB_OFF" ]]; then
        echo "mariadb   off      (scripts/stack up --no-mariadb or CDC_RECON_STACK_MARIADB=0)"
    else
        echo "mariadb   stopped"
        return 3
    fi
}

mariadb_env() {
    [[ "$WITH_MARIADB" == 0 || -f "$MARIADB_OFF" ]] && return
    echo "export CDC_RECON_MARIADB_URL=mariadb://$MARIADB_USER@$HOST:$MARIADB_PORT/source"
}
