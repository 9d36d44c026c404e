# Sourced by scripts/stack (it sets HOST, STATE, CACHE, HERE, the ports, CONNECT_HEAP and
# the helpers pid_alive, port_open, wait_for, fail_with_log, stop_pid, say, die): the
# Kafka Connect worker with the Debezium PostgreSQL and MariaDB connectors, and
# `connector ...`.
# shellcheck shell=bash

CONNECT_DIR="$STATE/connect"
CONNECT_LOG="$CONNECT_DIR/connect.log"
CONNECT_PID="$CONNECT_DIR/connect.pid"
# One jar directory per pom.xml (its hash in the name): checkouts with different poms
# share ~/.cache/cdc-recon, and a running worker opens jars lazily from its classpath, so
# a directory in use must never be emptied and refilled under it (a Debezium task
# restarted after a broker outage then failed with NoSuchFileException, for good).
CONNECT_STAMP=$(sha256sum "$HERE/connect/pom.xml" | cut -c1-16)
CONNECT_LIB="$CACHE/connect-lib-$CONNECT_STAMP"
CONNECT_PLUGINS="$CACHE/connect-plugins"  # one isolated plugin per folder of connect/plugins/
CONNECT_URL="http://$HOST:$CONNECT_PORT"
CONNECT_OFF="$STATE/connect.off"  # written by `up --no-connect`

connect_jars() {
    if [[ -f "$CONNECT_LIB/.resolved-$CONNECT_STAMP" ]]; then return; fi
    command -v mvn >/dev/null || die "mvn not found: install Maven (e.g. apt-get install maven)"
    say "resolving Kafka Connect and Debezium jars from Maven Central into $CONNECT_LIB"
    local fresh="$CONNECT_LIB.partial.$$"
    rm -rf "$fresh"
    mkdir -p "$fresh"
    if ! mvn -q -B -f "$HERE/connect/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$fresh" -DincludeScope=runtime >"$CACHE/connect-mvn.log" 2>&1; then
        rm -rf "$fresh"
        fail_with_log connect "$CACHE/connect-mvn.log" "Maven could not resolve the Connect jars"
    fi
    touch "$fresh/.resolved-$CONNECT_STAMP"
    # Complete or absent, never half there: another `up` may be resolving the same pom.
    mv -T "$fresh" "$CONNECT_LIB" 2>/dev/null || rm -rf "$fresh"
}

connect_plugins() {
    # Plugins whose versions differ from the worker's classpath (the MariaDB connector is
    # served at 3.5.0 only): each folder of scripts/stack.d/connect/plugins/ holds a pom
    # whose runtime jars go into a folder of their own on plugin.path, where Connect loads
    # them child-first, apart from Debezium 3.6.1 on the classpath.
    local pom name stamp dir
    for pom in "$HERE"/connect/plugins/*/pom.xml; do
        name=$(basename "$(dirname "$pom")")
        dir="$CONNECT_PLUGINS/$name"
        stamp=$(sha256sum "$pom" | cut -c1-16)
        [[ -f "$dir/.resolved-$stamp" ]] && continue
        say "resolving the Connect plugin $name from Maven Central into $dir"
        rm -rf "$dir"
        mkdir -p "$dir"
        if ! mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$dir" \
            -DincludeScope=runtime >"$CACHE/connect-plugin-$name-mvn.log" 2>&1; then
            fail_with_log connect "$CACHE/connect-plugin-$name-mvn.log" "Maven could not resolve the plugin $name"
        fi
        touch "$dir/.resolved-$stamp"
    done
}

connector_py() { # command args...
    python3 "$HERE/connect/connector.py" --url "$CONNECT_URL" \
        --pg-host "$HOST" --pg-port "$PG_PORT" --pg-user "$PG_USER" \
        --mariadb-port "$MARIADB_PORT" --state-dir "$STATE" "$@"
}

connect_ready() { connector_py ready; }

connect_config() {
    # Each Debezium connector is an isolated plugin on plugin.path (connect_plugins) and
    # plugins are found through their ServiceLoader manifests, with no classpath scan, so
    # the worker starts in seconds.
    # offset.flush.interval.ms is short because Debezium confirms a position to its
    # replication slot only after Connect flushed the offset: the slot frees WAL sooner.
    cat >"$CONNECT_DIR/worker.properties" <<EOF
# Written by scripts/stack; edit the script, not this file.
bootstrap.servers=$HOST:$KAFKA_PORT
group.id=cdc-recon-connect
listeners=http://$HOST:$CONNECT_PORT
rest.advertised.host.name=$HOST
rest.advertised.port=$CONNECT_PORT
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true
config.storage.topic=cdc-recon-connect-configs
offset.storage.topic=cdc-recon-connect-offsets
status.storage.topic=cdc-recon-connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.storage.partitions=5
status.storage.partitions=1
offset.flush.interval.ms=1000
scheduled.rebalance.max.delay.ms=0
task.shutdown.graceful.timeout.ms=5000
plugin.discovery=service_load
plugin.path=$CONNECT_PLUGINS
EOF
}

connect_up() {
    if pid_alive "$CONNECT_PID" && connect_ready; then
        say "connect already running on $CONNECT_URL (pid $(cat "$CONNECT_PID"))"
        return
    fi
    if port_open "$CONNECT_PORT"; then
        die "port $CONNECT_PORT is taken by a process this script did not start; set CDC_RECON_STACK_CONNECT_PORT"
    fi
    connect_jars
    connect_plugins
    mkdir -p "$CONNECT_DIR"
    connect_config
    say "starting kafka connect (debezium postgres, mariadb) on $CONNECT_URL"
    # shellcheck disable=SC2086
    java $CONNECT_HEAP -XX:+UseG1GC -Djava.awt.headless=true -Dfile.encoding=UTF-8 \
        -Dlog4j2.configurationFile="$HERE/connect/log4j2.properties" -Dcdc.stack.log="$CONNECT_LOG" \
        -cp "$CONNECT_LIB/*" org.apache.kafka.connect.cli.ConnectDistributed \
        "$CONNECT_DIR/worker.properties" </dev/null >"$CONNECT_DIR/stdout.log" 2>&1 &
    echo $! >"$CONNECT_PID"
    if ! wait_for "$START_TIMEOUT" connect connect_ready; then
        pid_alive "$CONNECT_PID" || fail_with_log connect "$CONNECT_DIR/stdout.log" "the process exited"
        fail_with_log connect "$CONNECT_LOG" "no answer from $CONNECT_URL/connectors within ${START_TIMEOUT}s"
    fi
    say "connect ready on $CONNECT_URL"
}

connect_down() { stop_pid connect "$CONNECT_PID"; }

connect_version() {
    local kafka debezium mariadb
    kafka=$(ls "$CONNECT_LIB" 2>/dev/null | sed -n 's/^connect-runtime-\(.*\)\.jar$/\1/p')
    debezium=$(ls "$CONNECT_PLUGINS/debezium-postgres" 2>/dev/null | sed -n 's/^debezium-connector-postgres-\(.*\)\.jar$/\1/p')
    mariadb=$(ls "$CONNECT_PLUGINS/debezium-mariadb" 2>/dev/null |
        sed -n 's/^debezium-connector-mariadb-\(.*\)\.jar$/\1/p')
    echo "$kafka (debezium-connector-postgres $debezium, debezium-connector-mariadb ${mariadb:-none})"
}

cmd_connector() {
    [[ $# -ge 1 ]] || die "usage: scripts/stack connector register|delete|status|pause|resume [NAME] [key=value ...]"
    { pid_alive "$CONNECT_PID" && connect_ready; } || die "kafka connect is not running: scripts/stack up"
    connector_py "$@"
}
