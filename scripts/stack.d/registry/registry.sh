# Sourced by scripts/stack: a Confluent-compatible schema registry (Apicurio Registry
# 2.0.2.Final, in memory) and Apicurio's Avro converter for the Connect worker.
#
#   built from Maven Central into $CACHE/registry-app (pom.xml here, once per pom change)
#   converter jars into $CONNECT_PLUGINS/apicurio-avro (converter-pom.xml): an isolated
#     plugin folder on the worker's plugin.path (connect.sh), beside the connectors'; a
#     small jar of ours holds the ServiceLoader manifest the worker's
#     `plugin.discovery=service_load` needs (Apicurio's jars have none)
#   Confluent API: $REGISTRY_URL (/apis/ccompat/v6); Apicurio's own: /apis/registry/v2
#
# Port: CDC_RECON_STACK_REGISTRY_PORT (18081). Off: CDC_RECON_STACK_REGISTRY=0.
# The registry keeps its schemas in memory: a restart forgets them (the tests register
# what they use; cdc-recon caches the schemas it has read).

REGISTRY_PORT="${CDC_RECON_STACK_REGISTRY_PORT:-18081}"
REGISTRY_HEAP="${CDC_RECON_STACK_REGISTRY_HEAP:--Xms64m -Xmx384m}"
WITH_REGISTRY="${CDC_RECON_STACK_REGISTRY:-1}"
REGISTRY_DIR="$STATE/registry"
REGISTRY_LOG="$REGISTRY_DIR/registry.log"
REGISTRY_PID="$REGISTRY_DIR/registry.pid"
REGISTRY_APP="$CACHE/registry-app"
REGISTRY_URL="http://$HOST:$REGISTRY_PORT/apis/ccompat/v6"
REGISTRY_CONVERTER=io.apicurio.registry.utils.converter.AvroConverter

registry_build() {
    local stamp
    stamp=$(sha256sum "$HERE/registry/pom.xml" | cut -c1-16)
    if [[ -f "$REGISTRY_APP/.built-$stamp" ]]; then return; fi
    command -v mvn >/dev/null || die "mvn not found: install Maven (e.g. apt-get install maven)"
    say "building Apicurio Registry from Maven Central into $REGISTRY_APP (once; a few minutes)"
    rm -rf "$REGISTRY_APP"
    mkdir -p "$REGISTRY_APP"
    cp "$HERE/registry/pom.xml" "$REGISTRY_APP/pom.xml"
    if ! mvn -q -B -f "$REGISTRY_APP/pom.xml" package -DskipTests \
        -Dquarkus.index-dependency.app.group-id=io.apicurio \
        -Dquarkus.index-dependency.app.artifact-id=apicurio-registry-app \
        >"$CACHE/registry-mvn.log" 2>&1; then
        fail_with_log registry "$CACHE/registry-mvn.log" "Maven could not build the registry"
    fi
    touch "$REGISTRY_APP/.built-$stamp"
}

registry_converter_jars() {
    local stamp dir="$CONNECT_PLUGINS/apicurio-avro"  # connect.sh's plugin.path
    stamp=$(sha256sum "$HERE/registry/converter-pom.xml" | cut -c1-16)
    if [[ -f "$dir/.resolved-$stamp" ]]; then return; fi
    say "resolving Apicurio's Avro converter from Maven Central into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    if ! mvn -q -B -f "$HERE/registry/converter-pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$dir" -DincludeScope=runtime >"$CACHE/registry-converter-mvn.log" 2>&1; then
        fail_with_log registry "$CACHE/registry-converter-mvn.log" "Maven could not resolve the converter"
    fi
    python3 - "$dir/cdc-recon-plugin-manifest.jar" "$REGISTRY_CONVERTER" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as jar:
    jar.writestr("META-INF/services/org.apache.kafka.connect.storage.Converter", sys.argv[2] + "\n")
PY
    touch "$dir/.resolved-$stamp"
}

registry_ready() { curl -fsS -o /dev/null "$REGISTRY_URL/subjects" 2>/dev/null; }

registry_up() {
    [[ "$WITH_REGISTRY" != 0 ]] || return 0
    registry_converter_jars  # before Connect starts: it scans plugin.path once
    if pid_alive "$REGISTRY_PID" && registry_ready; then
        say "registry already running on $REGISTRY_URL (pid $(cat "$REGISTRY_PID"))"
        return
    fi
    if port_open "$REGISTRY_PORT"; then
        die "port $REGISTRY_PORT is taken by a process this script did not start; set CDC_RECON_STACK_REGISTRY_PORT"
    fi
    command -v java >/dev/null || die "java not found: install a JDK 17+"
    registry_build
    mkdir -p "$REGISTRY_DIR"
    say "starting the schema registry (Apicurio) on $REGISTRY_URL"
    # shellcheck disable=SC2086
    java $REGISTRY_HEAP -Dquarkus.http.host="$HOST" -Dquarkus.http.port="$REGISTRY_PORT" \
        -Dquarkus.log.console.enable=false -Dquarkus.log.file.enable=true \
        -Dquarkus.log.file.path="$REGISTRY_LOG" \
        -jar "$(ls "$REGISTRY_APP"/target/*-runner.jar)" </dev/null >"$REGISTRY_DIR/stdout.log" 2>&1 &
    echo $! >"$REGISTRY_PID"
    if ! wait_for "$START_TIMEOUT" registry registry_ready; then
        pid_alive "$REGISTRY_PID" || fail_with_log registry "$REGISTRY_DIR/stdout.log" "the process exited"
        fail_with_log registry "$REGISTRY_LOG" "no answer from $REGISTRY_URL within ${START_TIMEOUT}s"
    fi
    say "registry ready on $REGISTRY_URL"
}

registry_down() { stop_pid registry "$REGISTRY_PID"; }

registry_status() {
    if pid_alive "$REGISTRY_PID" && registry_ready; then
        echo "registry  running  $REGISTRY_URL  pid $(cat "$REGISTRY_PID")  Apicurio 2.0.2.Final"
    elif [[ "$WITH_REGISTRY" == 0 ]]; then
        echo "registry  off      (CDC_RECON_STACK_REGISTRY=0)"
    else
        echo "registry  stopped"
        return 3
    fi
}

registry_env() {
    [[ "$WITH_REGISTRY" == 0 ]] && return
    # not CDC_RECON_SCHEMA_REGISTRY_URL: that would set every configuration's registry
    echo "export CDC_RECON_REGISTRY_URL=$REGISTRY_URL"
}
