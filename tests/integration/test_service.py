"""The service as users run it (`cdc-recon run` in a subprocess) on the real Kafka and PostgreSQL.

Each test gets its own topic, consumer group and target schema (control tables included);
the process is configured by a YAML file in tmp_path and the stack's CDC_RECON_* variables.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.conftest import Database, Services, wait_for
from tests.integration.deployment import CRASH_ENV, Deployment, Deployments
from tests.integration.events import ChangeLog, KeyValue, send

pytestmark = pytest.mark.integration

Row = tuple[int, str, str | None]


@pytest.fixture
def deploy(deployments: Deployments) -> Callable[..., Deployment]:
    """Creates the target table, a topic and a dead-letter topic, then `cdc-recon init`."""
    deployments.create(
        "CREATE TABLE {t}.customers (id int PRIMARY KEY, name varchar(5) NOT NULL, email text)"
    )

    def make(partitions: int = 1, **service: Any) -> Deployment:
        return deployments.make(
            "service",
            partitions,
            kafka={"heartbeat.interval.ms": "500", "session.timeout.ms": "6000"},
            service={"batch_size": 50, "poll_timeout": 0.2, "retry_initial": 0.1, **service},
            tables=[deployments.mapping("customers")],
        )

    return make


@dataclass
class Workload:
    messages: list[KeyValue]
    expected: dict[int, Row]  # the rows the changes leave
    changes: int  # messages that are changes (tombstones are not)


def workload(changes: int, keys: int, seed: int, *, tombstones: bool = True) -> Workload:
    """Random inserts, updates and deletes (each followed by its tombstone) over `keys` ids."""
    rng = random.Random(seed)
    log = ChangeLog()
    rows: dict[int, Row] = {}
    messages: list[KeyValue] = []
    for _ in range(changes):
        key = rng.randrange(keys)
        if key in rows and rng.random() < 0.2:
            messages.append(log.delete({"id": key}))
            if tombstones:
                messages.append(log.tombstone({"id": key}))
            del rows[key]
            continue
        row = {"id": key, "name": f"n{rng.randrange(1000)}", "email": f"{key}@x.org"}
        messages.append(log.update(row) if key in rows else log.insert(row))
        rows[key] = (key, str(row["name"]), str(row["email"]))
    return Workload(messages, rows, changes)


class Target:
    def __init__(self, db: Database) -> None:
        self.db = db

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.db.engine.connect() as conn:
            return conn.execute(sa.text(sql.format(s=f'"{self.db.schema}"')), params).scalar()

    def rows(self) -> dict[int, Row]:
        with self.db.engine.connect() as conn:
            found = conn.execute(
                sa.text(f"SELECT id, name, email FROM {self.db.table('customers')}")
            )
            return {row[0]: tuple(row) for row in found}  # type: ignore[misc]

    def ledger(self) -> int:
        return int(self.scalar("SELECT count(*) FROM {s}.ledger"))

    def stored_offsets(self, group: str) -> dict[tuple[str, int], int]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f'SELECT topic, kafka_partition, next_offset FROM "{self.db.schema}".offsets '
                    "WHERE group_id = :g"
                ),
                {"g": group},
            )
            return {(t, p): o for t, p, o in rows}


def committed_offsets(services: Services, group: str, topic: str, partitions: int) -> dict:
    consumer = Consumer({"bootstrap.servers": services.kafka_bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}


def read_all(services: Services, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": services.kafka_bootstrap,
            "group.id": f"reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    found: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while len(found) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                found.append(msg)
    finally:
        consumer.close()
    return found


class Stream:
    """Writes a workload to a topic in small chunks from a thread, as a live source would."""

    def __init__(self, services: Services, topic: str, messages: list[KeyValue]) -> None:
        self._messages = messages
        self._producer = Producer({"bootstrap.servers": services.kafka_bootstrap, "acks": "all"})
        self._topic = topic
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self.sent < len(self._messages):
            chunk = self._messages[self.sent : self.sent + 20]
            for key, value in chunk:
                self._producer.produce(self._topic, key=key, value=value)
            assert self._producer.flush(30) == 0
            self.sent += len(chunk)
            time.sleep(0.05)  # the pace of the source, not synchronisation

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout: float = 120.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive() and self.sent == len(self._messages)


# -- the tests -----------------------------------------------------------------------------


def test_kill_between_db_commit_and_kafka_commit_loses_nothing_and_applies_once(
    deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    deployment = deploy(partitions=2, batch_size=20)
    topic, group = deployment.config["topics"][0], deployment.config["group_id"]
    work = workload(changes=300, keys=40, seed=1)
    send(services.kafka_bootstrap, topic, work.messages)
    target = Target(target_db)

    crashed = deployment.run("run", **{CRASH_ENV: "3"})
    assert crashed.process.returncode == -signal.SIGKILL, crashed.stderr
    stored = target.stored_offsets(group)
    committed = committed_offsets(services, group, topic, 2)
    assert any(offset > committed.get(key, 0) for key, offset in stored.items()), (
        "the crash must leave the target ahead of Kafka's committed offsets",
        stored,
        committed,
    )
    assert 0 < target.ledger() < work.changes
    consumed_before = sum(stored.values())

    rerun = deployment.run("run", "--until-idle", "2")
    assert rerun.process.returncode == 0, rerun.stderr
    assert target.rows() == work.expected
    assert target.ledger() == work.changes, "every change in the ledger exactly once"
    assert "duplicates 0" in rerun.stdout, "the restart resumed at the target's offsets"
    resumed = len(work.messages) - consumed_before
    assert f"stopped after {resumed} messages" in rerun.stdout, rerun.stdout


def test_two_instances_with_a_rebalance_mid_stream(
    deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    deployment = deploy(partitions=4, batch_size=20)
    topic = deployment.config["topics"][0]
    work = workload(changes=1500, keys=200, seed=2)
    stream = Stream(services, topic, work.messages)
    target = Target(target_db)

    stream.start()
    first = deployment.start("run", "--until-idle", "3")
    wait_for(lambda: target.ledger() > 0, "the first instance to apply changes")
    assert stream.sent < len(work.messages), "the second instance must join mid-stream"
    second = deployment.start("run", "--until-idle", "3")
    wait_for(lambda: "assigned" in second.stderr, "the second instance to get partitions")
    wait_for(lambda: "revoked" in first.stderr, "the first instance to give partitions up")
    stream.finish()

    assert first.wait() == 0, first.stderr
    assert second.wait() == 0, second.stderr
    assert target.rows() == work.expected
    assert target.ledger() == work.changes
    assert "applied 0," not in second.stdout, "the second instance applied its share"


def test_poison_messages_are_quarantined_and_good_events_applied(
    deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    deployment = deploy(partitions=1)
    topic, dlq = deployment.config["topics"][0], deployment.config["dead_letter_topic"]
    customers, orders = ChangeLog(wrapped=True), ChangeLog(table="orders")
    poison = {
        1: ((b'{"payload":{"id":9}}', b"{this is not json"), "undecodable"),
        3: (orders.insert({"id": 1, "total": 5}), "unmapped"),
        5: (customers.insert({"id": 100, "name": "far too long", "email": None}), "invalid"),
        7: (customers.insert({"id": 101, "name": None, "email": "x"}), "rejected"),
    }
    messages: list[KeyValue] = []
    for offset in range(9):
        if offset in poison:
            messages.append(poison[offset][0])
        else:
            messages.append(customers.insert({"id": offset, "name": f"ok{offset}", "email": None}))
    send(services.kafka_bootstrap, topic, messages)

    run = deployment.run("run", "--until-idle", "2")
    assert run.process.returncode == 0, run.stderr
    good = {o: (o, f"ok{o}", None) for o in range(9) if o not in poison}
    assert Target(target_db).rows() == good

    with target_db.engine.connect() as conn:
        stored = conn.execute(
            sa.text(
                f"SELECT kafka_offset, topic, kafka_partition, reason, raw_key, raw_value, detail "
                f'FROM "{target_db.schema}".failures ORDER BY kafka_offset'
            )
        ).all()
    assert [(r[0], r[1], r[2], r[3]) for r in stored] == [
        (offset, topic, 0, reason) for offset, (_, reason) in sorted(poison.items())
    ]
    for row in stored:
        (key, value), _ = poison[row[0]]
        assert (bytes(row[4]), bytes(row[5])) == (key, value) and row[6]

    dead = read_all(services, dlq, len(poison))
    assert len(dead) == len(poison)
    for msg in dead:
        headers = {name: value.decode() for name, value in msg.headers()}
        offset = int(headers["cdc_recon.offset"])
        (key, value), reason = poison[offset]
        assert (msg.key(), msg.value()) == (key, value)
        assert headers["cdc_recon.reason"] == reason and headers["cdc_recon.detail"]
        assert (headers["cdc_recon.topic"], headers["cdc_recon.partition"]) == (topic, "0")

    status = json.loads(deployment.run("status", "--json").stdout)
    assert status["failures"] == {
        "invalid": {"open": 1},
        "rejected": {"open": 1},
        "undecodable": {"open": 1},
        "unmapped": {"open": 1},
    }


def test_sigterm_mid_stream_exits_zero_with_offsets_committed_everywhere(
    deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    deployment = deploy(partitions=2, batch_size=20)
    topic, group = deployment.config["topics"][0], deployment.config["group_id"]
    work = workload(changes=1500, keys=100, seed=4, tombstones=False)
    stream = Stream(services, topic, work.messages)
    target = Target(target_db)

    stream.start()
    service = deployment.start("run")
    wait_for(lambda: target.ledger() > 0, "the service to apply changes")
    service.process.send_signal(signal.SIGTERM)
    assert service.wait(60) == 0, service.stderr
    assert "SIGTERM" in service.stderr and "stopped after" in service.stdout
    stream.finish()

    stored = target.stored_offsets(group)
    assert stored and stored == committed_offsets(services, group, topic, 2)
    assert sum(stored.values()) == target.ledger(), "one ledger row per consumed message"


def test_a_burst_is_committed_to_kafka_once_applied_not_after_the_poll_timeout(
    deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    """The service passes on the results of its last batches (stats, Kafka commit) as
    soon as the stream is quiet for `linger`. A poll timeout longer than the wait below
    makes the test fail if the service waited for it instead."""
    deployment = deploy(batch_size=1000, poll_timeout=300, linger=0.05)
    topic, group = deployment.config["topics"][0], deployment.config["group_id"]
    work = workload(changes=300, keys=50, seed=7, tombstones=False)
    deployment.start("run")
    send(services.kafka_bootstrap, topic, work.messages)
    wanted = {(topic, 0): len(work.messages)}
    wait_for(
        lambda: committed_offsets(services, group, topic, 1) == wanted,
        "the burst's offsets committed to Kafka",
        timeout=60,
    )
    assert Target(target_db).rows() == work.expected


def test_lost_database_connection_is_retried_without_losing_or_repeating(
    deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    deployment = deploy(partitions=2, batch_size=20)
    topic = deployment.config["topics"][0]
    work = workload(changes=800, keys=100, seed=6)
    stream = Stream(services, topic, work.messages)
    target = Target(target_db)
    name = f"cdcr-{uuid.uuid4().hex[:8]}"
    url = f"{services.target_url}?application_name={name}"

    stream.start()
    service = deployment.start("run", "--until-idle", "2", CDC_RECON_TARGET_URL=url)
    wait_for(lambda: target.ledger() > 0, "the service to apply changes")
    kill = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :n"
    )
    assert target.scalar(kill, n=name) >= 1
    wait_for(lambda: "retrying" in service.stderr, "the service to retry")
    stream.finish()

    assert service.wait() == 0, service.stderr
    assert target.rows() == work.expected
    assert target.ledger() == work.changes


def test_status_reports_the_lag_and_zero_after_catch_up(
    deploy: Callable[..., Deployment], services: Services
) -> None:
    deployment = deploy(partitions=2)
    topic = deployment.config["topics"][0]
    work = workload(changes=50, keys=10, seed=5)
    send(services.kafka_bootstrap, topic, work.messages)

    before = json.loads(deployment.run("status", "--json").stdout)
    assert before["total_lag"] == len(work.messages)
    assert {p["stored_offset"] for p in before["partitions"]} == {None}

    assert deployment.run("run", "--until-idle", "1").process.returncode == 0
    after = deployment.run("status", "--json")
    assert after.process.returncode == 0, after.stderr
    report = json.loads(after.stdout)
    assert report["total_lag"] == 0 and len(report["partitions"]) == 2
    for partition in report["partitions"]:
        assert partition["lag"] == 0
        assert (
            partition["stored_offset"] == partition["end_offset"] == partition["committed_offset"]
        )
    assert report["ledger"] == {"applied": work.changes}
    human = deployment.run("status")
    assert human.process.returncode == 0 and "total lag: 0" in human.stdout


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CDC_RECON_KAFKA_BOOTSTRAP", "127.0.0.1:1", "cannot reach Kafka at 127.0.0.1:1"),
        (
            "CDC_RECON_TARGET_URL",
            "postgresql://cdc_recon@127.0.0.1:1/target",
            "cannot reach the target database",
        ),
    ],
)
@pytest.mark.parametrize("command", [("run",), ("status",)])
def test_unreachable_service_is_a_one_line_error(
    deploy: Callable[..., Deployment],
    variable: str,
    value: str,
    says: str,
    command: tuple[str, ...],
) -> None:
    deployment = deploy()
    failed = deployment.run(*command, timeout=60, **{variable: value})
    assert failed.process.returncode == 3
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdc-recon: error: ") and says in lines[0], lines
