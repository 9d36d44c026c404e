"""The peer of `bench/apply.py`: the Debezium JDBC sink connector on the same topic.

`scripts/stack jdbc-sink up` starts a Kafka Connect worker of its own with the sink in an
isolated plugin folder (scripts/stack.d/jdbc-sink/); `JdbcSink` registers one connector
per run through its REST API with the best configuration measured in issue 19
(`insert.mode=upsert`, `primary.key.mode=record_key`, `delete.enabled`, batches of 5,000
records through the reduction buffer, PostgreSQL's UNNEST insert, 8 MiB partition
fetches, one task per partition), waits until the last event of every partition is in
its table, and deletes the connector again.

A run is timed as `bench/apply.py` times cdc_recon: from the moment its first rows are
visible in the target (the worker's task start and the consumer group's join are not
counted) to the moment the last event of each partition is; the rows already there at
the first moment are subtracted from the events counted. They can be fewer than the
events the sink had consumed by then (a key changed twice counts once), so this favours
the peer, never cdc_recon.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

POLL = 0.05  # seconds between looks at the target: ±0.05 s on a run of ~10 s


@dataclass(frozen=True)
class Finish:
    """What the last event of each partition leaves in the table: (id, notes) pairs."""

    rows: tuple[tuple[int, str], ...]

    def values(self) -> str:
        return ", ".join(f"({key}, '{notes}')" for key, notes in self.rows)


def http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and method in ("GET", "DELETE"):
            return None
        raise SystemExit(f"{method} {url}: HTTP {exc.code} {exc.read()[:500]!r}") from exc
    return json.loads(text) if text else None


def jdbc_url(target_url: str) -> tuple[str, str]:
    """The JDBC URL and user of cdc_recon's `postgresql://user@host:port/db` target."""
    parts = urlsplit(target_url)
    return f"jdbc:postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}", (
        parts.username or "postgres"
    )


def connector_config(
    topic: str, table: str, target_url: str, tasks: int, *, best: bool = True
) -> dict[str, str]:
    """The sink's settings; `best=False` gives its defaults (as a first user gets)."""
    url, user = jdbc_url(target_url)
    config = {
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max": str(tasks),
        "topics": topic,
        "connection.url": url,
        "connection.username": user,
        "connection.password": "",
        "insert.mode": "upsert",
        "primary.key.mode": "record_key",
        "delete.enabled": "true",
        "schema.evolution": "none",
        "collection.name.format": table,
        "consumer.override.auto.offset.reset": "earliest",
    }
    if best:
        config |= {
            "batch.size": "5000",
            "consumer.override.max.poll.records": "5000",
            "use.reduction.buffer": "true",
            "dialect.postgres.unnest.insert.enabled": "true",
            "consumer.override.max.partition.fetch.bytes": str(8 << 20),
        }
    return config


class JdbcSink:
    """One Connect worker's REST API and one target table the connectors write."""

    def __init__(self, url: str, engine: sa.Engine, table: str) -> None:
        self.url = url.rstrip("/")
        self.engine = engine
        self.table = table  # "schema".name, quoted

    def available(self) -> bool:
        try:
            plugins = http("GET", f"{self.url}/connector-plugins", timeout=5)
        except (OSError, SystemExit):
            return False
        return any(p["class"].endswith("JdbcSinkConnector") for p in plugins or [])

    def run(
        self, name: str, config: dict[str, str], finish: Finish, events: int, timeout: float = 600
    ) -> float:
        """Events/s of one connector from its first visible rows to `finish`."""
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {self.table}"))
        http("PUT", f"{self.url}/connectors/{name}/config", config)
        try:
            started, before = self._first_rows(name, time.monotonic() + timeout)
            self._wait(name, finish, time.monotonic() + timeout)
            elapsed = time.monotonic() - started
        finally:
            self.delete(name)
        return (events - before) / elapsed

    def delete(self, name: str) -> None:
        http("DELETE", f"{self.url}/connectors/{name}")
        deadline = time.monotonic() + 60
        while http("GET", f"{self.url}/connectors/{name}") is not None:
            if time.monotonic() > deadline:
                raise SystemExit(f"jdbc sink {name}: still there 60 s after its DELETE")
            time.sleep(POLL)

    def _first_rows(self, name: str, deadline: float) -> tuple[float, int]:
        count = sa.text(f"SELECT count(*) FROM {self.table}")
        while time.monotonic() < deadline:
            with self.engine.connect() as conn:
                rows = int(conn.execute(count).scalar_one())
            if rows:
                return time.monotonic(), rows
            self._healthy(name)
            time.sleep(POLL)
        raise SystemExit(f"jdbc sink {name}: no row in {self.table} before the deadline")

    def _wait(self, name: str, finish: Finish, deadline: float) -> None:
        query = sa.text(
            f"SELECT count(*) FROM {self.table} WHERE (id, notes) IN ({finish.values()})"
        )
        seen = 0
        while time.monotonic() < deadline:
            with self.engine.connect() as conn:
                seen = int(conn.execute(query).scalar_one())
            if seen == len(finish.rows):
                return
            self._healthy(name)
            time.sleep(POLL)
        raise SystemExit(
            f"jdbc sink {name}: {seen} of the {len(finish.rows)} partitions' last events "
            f"in {self.table} before the deadline"
        )

    def _healthy(self, name: str) -> None:
        status = http("GET", f"{self.url}/connectors/{name}/status") or {}
        for task in status.get("tasks", []):
            if task.get("state") == "FAILED":
                trace = str(task.get("trace", ""))[:2000]
                raise SystemExit(f"jdbc sink {name}: task {task.get('id')} FAILED: {trace}")


def last_per_partition(events: int, keys: int, partitions: int) -> Finish:
    """The (id, notes) the last event of each partition writes, as `apply.produce` makes
    them (event i: key i % keys, partition key % partitions, notes 'change i')."""
    found: dict[int, tuple[int, str]] = {}
    for i in range(events - 1, -1, -1):
        key = i % keys
        found.setdefault(key % partitions, (key, f"change {i}"))
        if len(found) == partitions:
            break
    return Finish(tuple(sorted(found.values())))


def summary(name: str, runs: Sequence[float]) -> str:
    return f"{name}: " + ", ".join(f"{r:.0f}" for r in runs)
