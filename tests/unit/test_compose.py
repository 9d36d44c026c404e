"""docker-compose.yml and deploy/ keep what README promises (parsed only, no services)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICES = (
    "kafka", "source-db", "target-db", "mariadb", "connect", "connect-init",
    "connect-init-mariadb", "prometheus", "grafana",
)  # fmt: skip


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = _yaml(ROOT / "docker-compose.yml")
    assert isinstance(compose, dict)
    result = compose["services"]
    assert isinstance(result, dict)
    return result


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def test_all_services_exist(services: dict[str, Any]) -> None:
    missing = [name for name in SERVICES if name not in services]
    assert not missing, f"services missing from docker-compose.yml: {missing}"


def test_kafka_is_kraft_4(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+(\.\d+)?", kafka["image"])
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "://kafka:9092" in advertised and "://localhost:19092" in advertised
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "healthcheck" in kafka


def test_source_db_has_logical_wal(services: dict[str, Any]) -> None:
    command = services["source-db"]["command"]
    settings = {command[i + 1] for i, arg in enumerate(command[:-1]) if arg == "-c"}
    assert "wal_level=logical" in settings
    for name in ("source-db", "target-db"):
        password = _env(services[name])["POSTGRES_PASSWORD"]
        assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:-[^}]*\}", password), name


def test_published_ports_bind_on_loopback(services: dict[str, Any]) -> None:
    expected = dict(kafka=19092, connect=8083, prometheus=9090, grafana=3000)
    expected |= {"source-db": 15433, "target-db": 15434, "mariadb": 13306}
    seen: dict[int, str] = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            match = re.fullmatch(r"127\.0\.0\.1:(\d+):(\d+)", str(port))
            assert match, f"{name}: {port!r} does not bind a host port on 127.0.0.1"
            host = int(match.group(1))
            assert 0 < host < 65536 and host not in seen, f"{name}: host port {host} clashes"
            seen[host] = name
    assert {port: name for name, port in expected.items()} == seen


@pytest.mark.parametrize(
    ("init", "file", "name", "connector_class"),
    [
        ("connect-init", "debezium-postgres.json", "cdc-recon-source",
         "io.debezium.connector.postgresql.PostgresConnector"),
        ("connect-init-mariadb", "debezium-mariadb.json", "cdc-recon-mariadb",
         "io.debezium.connector.mariadb.MariaDbConnector"),
    ],
)  # fmt: skip
def test_connector_config(
    services: dict[str, Any], init: str, file: str, name: str, connector_class: str
) -> None:
    path = DEPLOY / "connect" / file
    text = path.read_text(encoding="utf-8")
    connector = json.loads(text)
    config = connector["config"]
    assert connector["name"] == name == _env(services[init])["CONNECTOR_NAME"]
    assert config["connector.class"] == connector_class
    assert config["provide.transaction.metadata"] == "true"
    for key, token in (("hostname", "DB_HOST"), ("password", "DB_PASSWORD")):
        assert config[f"database.{key}"] == "${" + token + "}"
    # connect-init cuts the "config" object out with sed: drop line 1 through the line
    # opening "config", drop the last line, put "{" in front. Same cut here.
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if i and re.search(r'"config"\s*:\s*{', line))
    assert json.loads("\n".join(["{", *lines[start + 1 : -1]])) == config
    # every ${...} the JSON holds is one the command replaces
    command = services[init]["command"][0]
    for token in set(re.findall(r"\$\{(\w+)\}", text)):
        assert f"[$$]{{{token}}}" in command, token
    assert f"./deploy/connect/{path.name}:/connector.json:ro" in services[init]["volumes"]
    assert "/connector.json" in command and "PUT" in command


def test_mariadb_writes_the_binlog_debezium_reads(services: dict[str, Any]) -> None:
    flags = set(services["mariadb"]["command"])
    wanted = {"--binlog-format=ROW", "--binlog-row-image=FULL", "--gtid-strict-mode=ON"}
    assert wanted <= flags and any(f.startswith("--log-bin") for f in flags)
    assert "./deploy/mariadb/init:/docker-entrypoint-initdb.d:ro" in services["mariadb"]["volumes"]
    assert (DEPLOY / "mariadb" / "init" / "10-debezium.sh").exists()


def test_prometheus_scrapes_cdc_recon(services: dict[str, Any]) -> None:
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = config["scrape_configs"]
    targets = [t for job in jobs for static in job["static_configs"] for t in static["targets"]]
    assert any(t.endswith(":9464") for t in targets), targets
    assert config["rule_files"] == ["alerts.yml"]
    rules = _yaml(DEPLOY / "prometheus" / "alerts.yml")
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    assert {"ConsumerLagHigh", "QuarantineGrowing"} <= set(alerts)
    assert all(r["labels"]["severity"] and r["annotations"]["summary"] for r in alerts.values())
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "host.docker.internal:host-gateway" in prometheus["extra_hosts"]


def test_grafana_provisioning_and_dashboard(services: dict[str, Any]) -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasource = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = _yaml(provisioning / "dashboards" / "cdc-recon.yml")["providers"][0]
    mount = f"./deploy/grafana/dashboards:{provider['options']['path']}:ro"
    assert mount in services["grafana"]["volumes"]
    dashboard_path = DEPLOY / "grafana" / "dashboards" / "cdc-recon-overview.json"
    dashboard = json.loads(dashboard_path.read_text(encoding="utf-8"))
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    assert "cdc_recon_consumer_lag" in exprs and "cdc_recon_events_applied_total" in exprs
