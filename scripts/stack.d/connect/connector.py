"""Registers, inspects and deletes Debezium connectors on the stack's Kafka Connect worker.

Standard library only (scripts/stack runs it before any virtualenv exists); SQL goes
through `psql`. Called by `scripts/stack connector ...`, which passes where Connect and
PostgreSQL are:

    connector.py --url URL --pg-host H --pg-port P --pg-user U \
        --mariadb-port P --state-dir DIR ready
    connector.py ... register [NAME] [--source postgres|mariadb] [key=value ...] [--wait SECONDS]
    connector.py ... delete NAME
    connector.py ... status [NAME]
    connector.py ... pause|resume NAME

`register` reads the checked-in connector JSON (deploy/connect/debezium-postgres.json, or
debezium-mariadb.json with `--source mariadb`), replaces its ${...} placeholders with the
local stack's values, applies overrides and PUTs the config (create or update), then
waits until the connector and its task run and it streams (PostgreSQL: its replication
slot is active; MariaDB: its binlog dump thread is connected). Overrides, weakest first:
the JSON; for a NAME other than the JSON's, names derived from NAME (PostgreSQL: topic
prefix, slot and publication, so that connectors never share a slot; MariaDB: topic
prefix, and the server id and schema history file follow the name anyway); the
environment (CDC_RECON_CONNECTOR_TABLES, _TOPIC_PREFIX, _SLOT, _PUBLICATION, _DB); then
`key=value` arguments (any connector setting).

`delete` removes the connector, then what it left behind. PostgreSQL: its replication
slot and publication (a left-over slot pins WAL forever, and max_replication_slots is
small). MariaDB: its stored offsets (reset through Connect's REST API before the delete)
and its schema history file, so that a connector registered again under that name
starts with a new snapshot instead of a binlog position that may be gone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
CONNECTOR_JSON = ROOT / "deploy" / "connect" / "debezium-postgres.json"
MARIADB_JSON = ROOT / "deploy" / "connect" / "debezium-mariadb.json"
MARIADB_CLASS = "io.debezium.connector.mariadb.MariaDbConnector"
ENV_OVERRIDES = {
    "CDC_RECON_CONNECTOR_TABLES": "table.include.list",
    "CDC_RECON_CONNECTOR_TOPIC_PREFIX": "topic.prefix",
    "CDC_RECON_CONNECTOR_SLOT": "slot.name",
    "CDC_RECON_CONNECTOR_PUBLICATION": "publication.name",
    "CDC_RECON_CONNECTOR_DB": "database.dbname",
}


class Failed(Exception):
    """A one-line error for the user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# -- Connect's REST API -------------------------------------------------------------


def http(url: str, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
    """One REST call; returns the decoded JSON (None for an empty body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise Failed(f"{method} {url}: HTTP {exc.code}: {detail}", exc.code) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise Failed(f"{method} {url}: Kafka Connect does not answer ({exc})") from exc
    return json.loads(raw) if raw else None


def http_retrying(url: str, method: str = "GET", body: Any = None, seconds: float = 30.0) -> Any:
    """`http`, retried while Connect answers 404 (not there yet) or 409 (rebalancing)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return http(url, method, body)
        except Failed as exc:
            if exc.status not in (404, 409) or time.monotonic() > deadline:
                raise
        time.sleep(0.25)


def exists(url: str, name: str) -> bool:
    return name in http(f"{url}/connectors")


# -- PostgreSQL ---------------------------------------------------------------------


class Postgres:
    def __init__(self, host: str, port: str, user: str) -> None:
        self.host, self.port, self.user = host, port, user

    def query(self, db: str, sql: str) -> str:
        command = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
        command += ["-h", self.host, "-p", self.port, "-U", self.user, "-d", db, "-c", sql]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise Failed(f"psql: {done.stderr.strip()}")
        return done.stdout.strip()


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def slot_state(pg: Postgres, db: str, slot: str) -> str:
    """'' (no slot), 'active' or 'inactive'."""
    sql = f"SELECT active FROM pg_replication_slots WHERE slot_name = {literal(slot)}"
    found = pg.query(db, sql)
    return "" if not found else ("active" if found == "t" else "inactive")


def drop_slot_and_publication(pg: Postgres, db: str, slot: str, publication: str) -> None:
    """Waits for the stopped task to release its slot (terminating it after 20 s).

    A task still creating its slot (PostgreSQL makes that wait for every open
    transaction) is cut off too, or it would create the slot after this drop.
    """
    pg.query(
        db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = "
        f"'walsender' AND query LIKE {literal('CREATE_REPLICATION_SLOT %' + slot + '%')}",
    )
    deadline = time.monotonic() + 20
    while slot_state(pg, db, slot) == "active" and time.monotonic() < deadline:
        time.sleep(0.2)
    if slot_state(pg, db, slot) == "active":
        pg.query(
            db,
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            f"WHERE slot_name = {literal(slot)} AND active_pid IS NOT NULL",
        )
        while slot_state(pg, db, slot) == "active" and time.monotonic() < deadline + 10:
            time.sleep(0.2)
    if slot_state(pg, db, slot):
        pg.query(db, f"SELECT pg_drop_replication_slot({literal(slot)})")
        print(f"dropped replication slot {slot}")
    quoted = '"' + publication.replace('"', '""') + '"'
    if pg.query(db, f"SELECT 1 FROM pg_publication WHERE pubname = {literal(publication)}"):
        pg.query(db, f"DROP PUBLICATION IF EXISTS {quoted}")
        print(f"dropped publication {publication}")


# -- MariaDB ------------------------------------------------------------------------


class MariaDB:
    """The stack's MariaDB, through the `mariadb` client (as the stack's `cdc_recon`)."""

    def __init__(self, host: str, port: str) -> None:
        self.host, self.port = host, port

    def query(self, sql: str) -> str:
        command = ["mariadb", "--no-defaults", "-N", "-B", "-h", self.host, "-P", self.port]
        command += ["-u", "cdc_recon", "-e", sql]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise Failed(f"mariadb: {done.stderr.strip()}")
        return done.stdout.strip()

    def dump_threads(self, younger_than: float) -> int:
        """Binlog dump threads of the `debezium` account connected for at most that long."""
        sql = (
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'debezium' "
            f"AND COMMAND LIKE 'Binlog Dump%' AND TIME <= {int(younger_than) + 1}"
        )
        return int(self.query(sql) or 0)


@dataclass
class Stack:
    """Where the stack's services are (from scripts/stack)."""

    pg: Postgres
    mariadb: MariaDB
    state_dir: Path


# -- the connector's configuration --------------------------------------------------


def template(source: str = "postgres") -> tuple[str, dict[str, str]]:
    path = MARIADB_JSON if source == "mariadb" else CONNECTOR_JSON
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(data["name"]), {str(k): str(v) for k, v in data["config"].items()}


def source_of(config: dict[str, str]) -> str:
    return "mariadb" if config.get("connector.class") == MARIADB_CLASS else "postgres"


def derived_names(name: str, source: str) -> dict[str, str]:
    """Per-connector names for a NAME not in the JSON: a topic prefix, and for PostgreSQL
    a slot and a publication of its own."""
    if name == template(source)[0]:
        return {}
    if source == "mariadb":
        return {"topic.prefix": name}
    ident = re.sub(r"[^a-z0-9_]", "_", name.lower())[:58]
    return {"topic.prefix": name, "slot.name": f"{ident}_slot", "publication.name": f"{ident}_pub"}


def server_id(name: str) -> str:
    """A binlog client's server id, stable per connector name, never the server's own (1)."""
    return str(1000 + zlib.crc32(name.encode()) % 1_000_000)


def render(
    name: str, stack: Stack, overrides: list[str], source: str = "postgres"
) -> dict[str, str]:
    """The JSON's config for the local stack, with the overrides of the module docstring."""
    _, config = template(source)
    pg = stack.pg
    values = {
        "DB_HOST": pg.host,
        "DB_PORT": stack.mariadb.port if source == "mariadb" else pg.port,
        "DB_USER": pg.user,
        "DB_PASSWORD": os.environ.get("CDC_RECON_CONNECTOR_PASSWORD", ""),
        "DB_NAME": "source",
        "SERVER_ID": server_id(name),
        "STATE_DIR": str(stack.state_dir),
        "NAME": name,
    }
    for key, value in config.items():
        config[key] = re.sub(r"\$\{(\w+)\}", lambda m: values.get(m[1], m[0]), value)
    config.update(derived_names(name, source))
    config.update({key: os.environ[env] for env, key in ENV_OVERRIDES.items() if env in os.environ})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Failed(f"not a key=value override: {item!r}")
        config[key] = value
    if not config.get("database.password"):
        del config["database.password"]  # the stack trusts loopback; Debezium needs none
    return config


# -- commands -----------------------------------------------------------------------


def task_states(url: str, name: str, seconds: float) -> tuple[bool, str]:
    """(whether the connector and all its tasks run, a description); fails on FAILED."""
    status = http_retrying(f"{url}/connectors/{name}/status", seconds=seconds)
    tasks = status.get("tasks", [])
    for task in [status["connector"], *tasks]:
        if task.get("state") == "FAILED":
            trace = (task.get("trace") or "").strip().splitlines()
            raise Failed(f"connector {name} failed: {' | '.join(trace[:3])}")
    running = status["connector"]["state"] == "RUNNING" and bool(tasks)
    running = running and all(t["state"] == "RUNNING" for t in tasks)
    return running, f"connector {status['connector']['state']}, tasks {[t['state'] for t in tasks]}"


def wait_running(url: str, name: str, stack: Stack, config: dict[str, str], seconds: float) -> None:
    """Until the connector and its tasks run and it streams, or fail naming why."""
    started = time.monotonic()
    deadline = started + seconds
    source = source_of(config)
    state = "unknown"
    while time.monotonic() < deadline:
        running, state = task_states(url, name, deadline - time.monotonic())
        if running and streams(stack, config, time.monotonic() - started):
            return
        time.sleep(0.25)
    if source == "mariadb":
        raise Failed(
            f"connector {name} not streaming after {seconds:g}s ({state}; no binlog dump "
            "thread of the `debezium` account connected: still snapshotting, or see "
            ".stack/connect/connect.log)"
        )
    slot, db = config["slot.name"], config["database.dbname"]
    blockers = stack.pg.query(
        db,
        "SELECT string_agg(format('pid %s (%s, %s, %s s): %s', pid, datname, state, "
        "extract(epoch FROM now() - xact_start)::int, left(query, 60)), '; ') "
        "FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
        "AND xact_start < now() - interval '5 seconds'",
    )
    hint = f"; creating a slot waits for these transactions: {blockers}" if blockers else ""
    raise Failed(f"connector {name} not streaming after {seconds:g}s ({state}, slot {slot}){hint}")


def streams(stack: Stack, config: dict[str, str], elapsed: float) -> bool:
    """PostgreSQL: the slot is active; MariaDB: a binlog dump thread connected since."""
    if source_of(config) == "mariadb":
        return stack.mariadb.dump_threads(younger_than=elapsed) > 0
    return slot_state(stack.pg, config["database.dbname"], config["slot.name"]) == "active"


def validation_errors(url: str, name: str, config: dict[str, str]) -> str:
    """What Connect's validation says is wrong with `config` ('' when nothing or unknown).

    A refused config makes Connect 4.1 answer PUT with an internal error (Debezium
    describes a setting without a value); its validate endpoint still says what is wrong.
    """
    plugin = config["connector.class"]
    try:
        found = http(
            f"{url}/connector-plugins/{plugin}/config/validate", "PUT", {**config, "name": name}
        )
    except Failed:
        return ""
    errors = [
        f"{item['value']['name']}: {error}"
        for item in found.get("configs", [])
        for error in (item.get("value") or {}).get("errors", [])
    ]
    return f"connector {name} refused: " + "; ".join(errors) if errors else ""


def register(args: argparse.Namespace, stack: Stack) -> None:
    name = args.name or template(args.source)[0]
    config = render(name, stack, args.overrides, args.source)
    started = time.monotonic()
    try:
        http_retrying(f"{args.url}/connectors/{name}/config", "PUT", config)
    except Failed as exc:
        raise Failed(validation_errors(args.url, name, config) or str(exc)) from exc
    if args.wait > 0:
        wait_running(args.url, name, stack, config, args.wait)
    took = time.monotonic() - started
    if args.source == "mariadb":
        where = f"server id {config['database.server.id']}"
    else:
        where = f"slot {config['slot.name']}, publication {config['publication.name']}"
    print(
        f"connector {name} registered: topic prefix {config['topic.prefix']}, {where}, "
        f"tables {config.get('table.include.list', '(all)')} ({took:.1f}s)"
    )


def delete(args: argparse.Namespace, stack: Stack) -> None:
    name = args.name or template(args.source)[0]
    if exists(args.url, name):
        config = http(f"{args.url}/connectors/{name}/config")
        if source_of(config) == "mariadb":
            reset_offsets(args.url, name)
        http(f"{args.url}/connectors/{name}", "DELETE")
        deadline = time.monotonic() + 30
        while exists(args.url, name) and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"connector {name} deleted")
    else:
        config = render(name, stack, [], args.source)
        print(f"connector {name} is not registered")
    if source_of(config) == "mariadb":
        history = Path(config.get("schema.history.internal.file.filename", ""))
        if history.name and history.exists():
            history.unlink()
            print(f"removed schema history {history}")
        return
    db = config.get("database.dbname", "source")
    drop_slot_and_publication(stack.pg, db, config["slot.name"], config["publication.name"])


def reset_offsets(url: str, name: str) -> None:
    """Stop the connector and forget its binlog position (Connect's offsets API)."""
    http(f"{url}/connectors/{name}/stop", "PUT")
    deadline = time.monotonic() + 30
    while http(f"{url}/connectors/{name}/status")["connector"]["state"] != "STOPPED":
        if time.monotonic() > deadline:
            raise Failed(f"connector {name} did not stop in 30s")
        time.sleep(0.2)
    http(f"{url}/connectors/{name}/offsets", "DELETE")
    print(f"offsets of connector {name} reset")


def status(args: argparse.Namespace, _stack: Stack) -> None:
    names = [args.name] if args.name else http(f"{args.url}/connectors")
    if not names:
        print("(no connectors registered)")
    for name in names:
        found = http(f"{args.url}/connectors/{name}/status")
        tasks = ", ".join(f"task {t['id']} {t['state']}" for t in found.get("tasks", []))
        print(f"{name}: {found['connector']['state']}; {tasks or 'no tasks'}")
        for task in found.get("tasks", []):
            if task.get("trace"):
                print("    " + task["trace"].strip().splitlines()[0])


def pause(args: argparse.Namespace, _stack: Stack) -> None:
    """Stop streaming, keep the slot (WAL accumulates until `resume`)."""
    name = args.name or template()[0]
    http(f"{args.url}/connectors/{name}/pause", "PUT")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = http(f"{args.url}/connectors/{name}/status")
        if all(t["state"] == "PAUSED" for t in [status["connector"], *status["tasks"]]):
            print(f"connector {name} paused")
            return
        time.sleep(0.2)
    raise Failed(f"connector {name} did not pause in 30s")


def resume(args: argparse.Namespace, _stack: Stack) -> None:
    name = args.name or template()[0]
    http(f"{args.url}/connectors/{name}/resume", "PUT")
    print(f"connector {name} resumed")


def ready(args: argparse.Namespace, _stack: Stack) -> None:
    http(f"{args.url}/connectors", timeout=2.0)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/stack connector")
    parser.add_argument("--url", required=True, help="Kafka Connect REST URL")
    parser.add_argument("--pg-host", required=True)
    parser.add_argument("--pg-port", required=True)
    parser.add_argument("--pg-user", required=True)
    parser.add_argument("--mariadb-port", default="13306")
    parser.add_argument("--state-dir", default=str(ROOT / ".stack"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ready")
    reg = sub.add_parser("register", help="create or update a connector, wait until it streams")
    reg.add_argument("name", nargs="?")
    reg.add_argument("overrides", nargs="*", metavar="key=value")
    reg.add_argument("--wait", type=float, default=90.0, help="seconds (0: do not wait)")
    reg.add_argument("--source", choices=("postgres", "mariadb"), default="postgres")
    dele = sub.add_parser("delete")
    dele.add_argument("name", nargs="?")
    dele.add_argument("--source", choices=("postgres", "mariadb"), default="postgres")
    sub.add_parser("status").add_argument("name", nargs="?")
    sub.add_parser("pause").add_argument("name", nargs="?")
    sub.add_parser("resume").add_argument("name", nargs="?")
    # key=value overrides may come after an option (`NAME --source mariadb key=value`),
    # which argparse leaves unparsed: they are overrides all the same.
    args, rest = parser.parse_known_args(argv)
    unknown = [item for item in rest if "=" not in item or item.startswith("-")]
    if unknown or (rest and args.command != "register"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or rest)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.command == "register" and args.name and "=" in args.name:
        args.overrides.insert(0, args.name)
        args.name = None
    stack = Stack(
        Postgres(args.pg_host, args.pg_port, args.pg_user),
        MariaDB(args.pg_host, args.mariadb_port),
        Path(args.state_dir),
    )
    commands = {
        "ready": ready,
        "register": register,
        "delete": delete,
        "status": status,
        "pause": pause,
        "resume": resume,
    }
    try:
        commands[args.command](args, stack)
    except Failed as exc:
        if args.command != "ready":
            print(f"[stack] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
