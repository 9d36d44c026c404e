# Sourced by scripts/stack (after connect/connect.sh: it uses connect_jars, CONNECT_LIB and
# the helpers pid_alive, port_open, wait_for, fail_with_log, stop_pid, say, die): a Kafka
# Connect worker of its own with the Debezium JDBC sink connector, the peer bench/apply.py
# measures cdc_recon against. Not started by `up`: `scripts/stack jdbc-sink up|down|status`
# (bench/apply.py calls `up` itself); `down` with no service stops it too.
#
# The worker runs on the Connect jars of connect/pom.xml (its classpath, as the main
# worker) with the sink's jars, resolved from jdbc-sink/pom.xml, in one isolated plugin
# folder (plugin.path): the sink brings Hibernate and JDBC drivers the Debezium source
# connector must not see. `connector.client.config.override.policy=All` lets a connector
# set its own consumer's fetch sizes (consumer.override.*), as the measured configuration
# does. Port: CDC_RECON_STACK_JDBC_SINK_PORT (default: the Connect port + 1).
# shellcheck shell=bash

JDBC_SINK_PORT="${CDC_RECON_STACK_JDBC_SINK_PORT:-$((CONNECT_PORT + 1))}"
JDBC_SINK_DIR="$STATE/jdbc-sink"
JDBC_SINK_LOG="$JDBC_SINK_DIR/connect.log"
JDBC_SINK_PID="$JDBC_SINK_DIR/connect.pid"
JDBC_SINK_PLUGINS="$CACHE/jdbc-sink-plugins"
JDBC_SINK_URL="http://$HOST:$JDBC_SINK_PORT"
JDBC_SINK_HEAP="${CDC_RECON_STACK_JDBC_SINK_HEAP:--Xms256m -Xmx1g}"

jdbc_sink_jars() {
    local stamp lib="$JDBC_SINK_PLUGINS/debezium-connector-jdbc"
    stamp=$(sha256sum "$HERE/jdbc-sink/pom.xml" | cut -c1-16)
    if [[ -f "$JDBC_SINK_PLUGINS/.resolved-$stamp" ]]; then return; fi
    command -v mvn >/dev/null || die "mvn not found: install Maven (e.g. apt-get install maven)"
    say "resolving the Debezium JDBC sink connector from Maven Central into $lib"
    rm -rf "$JDBC_SINK_PLUGINS"
    mkdir -p "$lib"
    if ! mvn -q -B -f "$HERE/jdbc-sink/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$lib" -DincludeScope=runtime >"$CACHE/jdbc-sink-mvn.log" 2>&1; then
        fail_with_log jdbc-sink "$CACHE/jdbc-sink-mvn.log" "Maven could not resolve the JDBC sink jars"
    fi
    if ls "$lib" | grep -Eq '^(kafka-clients|connect-api|jackson-)'; then
        die "the JDBC sink's plugin folder $lib carries Kafka or Jackson jars: fix jdbc-sink/pom.xml's exclusions"
    fi
    touch "$JDBC_SINK_PLUGINS/.resolved-$stamp"
}

jdbc_sink_ready() {
    python3 "$HERE/connect/connector.py" --url "$JDBC_SINK_URL" \
        --pg-host "$HOST" --pg-port "$PG_PORT" --pg-user "$PG_USER" ready
}

jdbc_sink_config() {
    cat >"$JDBC_SINK_DIR/worker.properties" <<EOW
# Written by scripts/stack; edit scripts/stack.d/jdbc-sink/jdbc-sink.sh, not this file.
bootstrap.servers=$HOST:$KAFKA_PORT
group.id=cdc-recon-jdbc-sink
listeners=http://$HOST:$JDBC_SINK_PORT
rest.advertised.host.name=$HOST
rest.advertised.port=$JDBC_SINK_PORT
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true
config.storage.topic=cdc-recon-jdbc-sink-configs
offset.storage.topic=cdc-recon-jdbc-sink-offsets
status.storage.topic=cdc-recon-jdbc-sink-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.storage.partitions=1
status.storage.partitions=1
offset.flush.interval.ms=1000
scheduled.rebalance.max.delay.ms=0
task.shutdown.graceful.timeout.ms=5000
connector.client.config.override.policy=All
plugin.path=$JDBC_SINK_PLUGINS
plugin.discovery=service_load
EOW
}

jdbc_sink_up() {
    if pid_alive "$JDBC_SINK_PID" && jdbc_sink_ready; then
        say "jdbc-sink worker already running on $JDBC_SINK_URL (pid $(cat "$JDBC_SINK_PID"))"
        return
    fi
    if port_open "$JDBC_SINK_PORT"; then
        die "port $JDBC_SINK_PORT is taken by a process this script did not start; set CDC_RECON_STACK_JDBC_SINK_PORT"
    fi
    connect_jars
    jdbc_sink_jars
    mkdir -p "$JDBC_SINK_DIR"
    jdbc_sink_config
    say "starting a kafka connect worker with the debezium jdbc sink on $JDBC_SINK_URL"
    # shellcheck disable=SC2086
    java $JDBC_SINK_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$HERE/connect/log4j2.properties" -Dcdc.stack.log="$JDBC_SINK_LOG" \
        -cp "$CONNECT_LIB/*" org.apache.kafka.connect.cli.ConnectDistributed \
        "$JDBC_SINK_DIR/worker.properties" </dev/null >"$JDBC_SINK_DIR/stdout.log" 2>&1 &
    echo $! >"$JDBC_SINK_PID"
    if ! wait_for "$START_TIMEOUT" jdbc-sink jdbc_sink_ready; then
        pid_alive "$JDBC_SINK_PID" || fail_with_log jdbc-sink "$JDBC_SINK_DIR/stdout.log" "the process exited"
        fail_with_log jdbc-sink "$JDBC_SINK_LOG" "no answer from $JDBC_SINK_URL within ${START_TIMEOUT}s"
    fi
    say "jdbc-sink worker ready on $JDBC_SINK_URL"
}

jdbc_sink_down() { stop_pid jdbc-sink "$JDBC_SINK_PID"; }

jdbc_sink_status() {
    if pid_alive "$JDBC_SINK_PID" && jdbc_sink_ready; then
        echo "jdbc-sink running  $JDBC_SINK_URL  pid $(cat "$JDBC_SINK_PID")  $(ls "$JDBC_SINK_PLUGINS/debezium-connector-jdbc" | sed -n 's/^debezium-connector-jdbc-\(.*\)\.jar$/debezium-connector-jdbc \1/p')"
    else
        echo "jdbc-sink stopped  (scripts/stack jdbc-sink up: the peer of bench/apply.py)"
    fi
}

cmd_jdbc_sink() {
    case "${1:-}" in
    up) mkdir -p "$STATE" "$CACHE"; jdbc_sink_up ;;
    down) jdbc_sink_down ;;
    status) jdbc_sink_status ;;
    *) die "usage: scripts/stack jdbc-sink up|down|status" ;;
    esac
}
