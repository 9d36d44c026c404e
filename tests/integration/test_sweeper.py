"""The window sweeper on real Kafka and PostgreSQL: real gaps, found exactly, replayed.

A source table carries the trigger change log; a workload changes it with SQL, and the
same changes are published as Debezium-shaped events (txId and LSN taken from the log).
Then real gaps: a prefix of the topic is deleted (`delete_records`) before it is read,
the group's stored offsets are moved past a range, and two messages are poison. After
the service ran until idle, each adapter reports exactly what it can see, the trigger
log's sweep replays the missed changes, and the target equals the source row for row.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from cdc_recon.cli.app import main
from cdc_recon.config import Settings, load_settings
from cdc_recon.control_schema import init_control_schema
from cdc_recon.events import TXID_MASK, change_id, key_text
from cdc_recon.run import run_service
from cdc_recon.sweep.adapters.pg_trigger import PgTriggerLog
from cdc_recon.sweep.sweeper import SKIPPED, SweepRun, sweep_once
from tests.conftest import Database, Services
from tests.integration.events import KeyValue, envelope, key_bytes, send

pytestmark = pytest.mark.integration

Row = tuple[int, str, str | None]


@dataclass(frozen=True)
class Change:
    op: str
    row: dict[str, Any]  # the after image, or the key of a delete
    tx: int
    lsn: int
    at_ms: int
    change_id: str

    @property
    def key(self) -> int:
        return int(self.row["id"])

    def message(self, schema: str) -> list[KeyValue]:
        where = {"schema": schema, "table": "customers", "lsn": self.lsn, "tx": self.tx}
        key = key_bytes({"id": self.key})
        if self.op == "d":
            value = envelope("d", before=self.row, ts_ms=self.at_ms, **where)
            return [(key, value), (key, None)]  # the delete and its tombstone
        return [(key, envelope(self.op, after=self.row, ts_ms=self.at_ms, **where))]


class Scenario:
    """A mapped source table with the change log, its target table, topics, settings."""

    def __init__(
        self, services: Services, source: Database, target: Database, topics: Callable[..., str]
    ) -> None:
        self.services, self.source, self.target = services, source, target
        self.table = f"{source.schema}.customers"
        ddl = "(id int PRIMARY KEY, name text NOT NULL, email text)"
        for db in (source, target):
            with db.engine.begin() as conn:
                conn.execute(sa.text(f"CREATE TABLE {db.table('customers')} {ddl}"))
        init_control_schema(target.engine, target.schema)
        self.topic = topics("sweep")
        self.tx_topic = topics("sweep-tx")
        self.base: dict[str, Any] = {
            "kafka_bootstrap": services.kafka_bootstrap,
            "source_url": services.source_url,
            "target_url": services.target_url,
            "group_id": f"cdcr-sweep-{uuid.uuid4().hex[:8]}",
            "topics": [self.topic],
            "dead_letter_topic": topics("sweep-dlq"),
            "control_schema": target.schema,
            "kafka": {"heartbeat.interval.ms": "500", "session.timeout.ms": "6000"},
            "service": {"batch_size": 20, "poll_timeout": 0.2, "retry_initial": 0.1},
            "tables": [
                {"source": self.table, "target": f"{target.schema}.customers", "key": ["id"]}
            ],
        }
        log = PgTriggerLog(self.settings())
        try:
            log.install([self.table])
        finally:
            log.close()
        self._rows: dict[int, dict[str, Any]] = {}
        self._logged_so_far = 0

    def settings(self, **sweeper: Any) -> Settings:
        options = {"changelog_schema": self.source.schema, "grace": 0, **sweeper}
        return load_settings(None, **self.base, sweeper=options)

    def workload(self, transactions: int, keys: int, seed: int) -> list[Change]:
        """Random inserts, updates and deletes, 1-3 distinct keys per transaction."""
        rng = random.Random(seed)
        rows = self._rows
        ops: list[tuple[str, dict[str, Any]]] = []
        table = self.source.table("customers")
        with self.source.engine.connect() as conn:
            for _ in range(transactions):
                with conn.begin():
                    for key in rng.sample(range(keys), rng.randint(1, 3)):
                        ops.append(self._change(conn, table, rows, key, rng))
        return self._logged(ops)

    @staticmethod
    def _change(
        conn: sa.Connection, table: str, rows: dict[int, dict[str, Any]], key: int, rng: Any
    ) -> tuple[str, dict[str, Any]]:
        if key in rows and rng.random() < 0.25:
            conn.execute(sa.text(f"DELETE FROM {table} WHERE id = :id"), {"id": key})
            del rows[key]
            return "d", {"id": key}
        row = {"id": key, "name": f"n{rng.randrange(1000)}", "email": rng.choice([None, "a@b"])}
        verb = "u" if key in rows else "c"
        sql = (
            f"UPDATE {table} SET name = :name, email = :email WHERE id = :id"
            if verb == "u"
            else f"INSERT INTO {table} VALUES (:id, :name, :email)"
        )
        conn.execute(sa.text(sql), row)
        rows[key] = row
        return verb, row

    def _logged(self, ops: list[tuple[str, dict[str, Any]]]) -> list[Change]:
        with self.source.engine.connect() as conn:
            log = conn.execute(
                sa.text(
                    "SELECT op, key_text, txid, (lsn - '0/0')::bigint, "
                    "(extract(epoch FROM changed_at) * 1000)::bigint "
                    f'FROM "{self.source.schema}".changes ORDER BY id OFFSET :seen'
                ),
                {"seen": self._logged_so_far},
            ).all()
        self._logged_so_far += len(log)
        assert [(op, key) for op, key, *_ in log] == [(op, key_text([r["id"]])) for op, r in ops]
        changes = []
        for (op, row), (_, key, txid, lsn, at_ms) in zip(ops, log, strict=True):
            tx = txid & TXID_MASK
            changes.append(Change(op, row, tx, lsn, at_ms, change_id(self.table, key, str(tx))))
        return changes

    def rows(self, db: Database) -> dict[int, Row]:
        with db.engine.connect() as conn:
            found = conn.execute(sa.text(f"SELECT id, name, email FROM {db.table('customers')}"))
            return {row[0]: (row[0], row[1], row[2]) for row in found}

    def control(self, sql: str) -> list[tuple[Any, ...]]:
        with self.target.engine.begin() as conn:
            rows = conn.execute(sa.text(sql.format(s=f'"{self.target.schema}"'))).all()
            return [tuple(row) for row in rows]

    def move_offsets(self, next_offset: int) -> None:
        """The gap of a consumer that committed past messages it never applied."""
        group = self.base["group_id"]
        with self.target.engine.begin() as conn:
            moved = conn.execute(
                sa.text(
                    f'UPDATE "{self.target.schema}".offsets SET next_offset = :o '
                    "WHERE group_id = :g AND topic = :t AND kafka_partition = 0"
                ),
                {"o": next_offset, "g": group, "t": self.topic},
            )
            assert moved.rowcount == 1
        consumer = Consumer({"bootstrap.servers": self.services.kafka_bootstrap, "group.id": group})
        try:
            consumer.commit(
                offsets=[TopicPartition(self.topic, 0, next_offset)], asynchronous=False
            )
        finally:
            consumer.close()


@pytest.fixture
def scenario(
    services: Services, source_db: Database, target_db: Database, topic_factory: Callable[..., str]
) -> Iterator[Scenario]:
    yield Scenario(services, source_db, target_db, topic_factory)


def superseded(change: Change, changes: list[Change], lost: set[str]) -> bool:
    """A later change of the same key reached the ledger: the key holds a newer position."""
    return any(
        c.key == change.key and c.lsn > change.lsn and c.change_id not in lost for c in changes
    )


def transaction_events(changes: list[Change], table: str) -> list[KeyValue]:
    """Debezium's BEGIN and END events, one pair per transaction."""
    by_tx: dict[int, list[Change]] = {}
    for change in changes:
        by_tx.setdefault(change.tx, []).append(change)
    events: list[KeyValue] = []
    for tx, group in by_tx.items():
        label = f"{tx}:{group[-1].lsn}"
        events.append((None, orjson.dumps({"status": "BEGIN", "id": label})))
        end = {
            "status": "END",
            "id": label,
            "event_count": len(group),
            "data_collections": [{"data_collection": table, "event_count": len(group)}],
        }
        events.append((None, orjson.dumps(end)))
    return events


@dataclass
class Gaps:
    """Which changes the pipeline lost, and how (indexes into `changes`)."""

    changes: list[Change]
    first_message: list[int]  # index of each change's first message in the topic
    deleted: set[int]  # (b) delete_records took them before the service read them
    skipped: set[int]  # (a) the stored offsets were moved past them
    undecodable: int  # (c) quarantined
    unmapped: int  # (c) quarantined

    @property
    def lost(self) -> set[str]:
        indexes = self.deleted | self.skipped | {self.undecodable, self.unmapped}
        return {self.changes[i].change_id for i in indexes}

    def expected_missed(self) -> set[str]:
        """Lost and not superseded: no later change of the key reached the ledger."""
        lost = self.lost
        return {
            c.change_id
            for c in self.changes
            if c.change_id in lost and not superseded(c, self.changes, lost)
        }


def last_of_its_key(changes: list[Change], i: int) -> bool:
    return not any(c.key == changes[i].key for c in changes[i + 1 :])


def publish_with_gaps(
    scenario: Scenario, changes: list[Change], services: Services, admin: AdminClient
) -> Gaps:
    """Publish the changes, lose some of them for real, run the service until idle."""
    schema = scenario.source.schema
    messages: list[KeyValue] = []
    first_message: list[int] = []
    for change in changes:
        first_message.append(len(messages))
        messages.extend(change.message(schema))
    late = [i for i in range(80, len(changes)) if last_of_its_key(changes, i)]
    undecodable = late[0]
    unmapped = next(i for i in late[1:] if changes[i].op != "d")
    gaps = Gaps(changes, first_message, set(range(10)), set(range(50, 65)), undecodable, unmapped)
    messages[first_message[undecodable]] = (messages[first_message[undecodable]][0], b"{not json")
    poison = changes[unmapped]
    where = {"schema": schema, "table": "customers", "lsn": poison.lsn, "tx": poison.tx}
    messages[first_message[unmapped]] = (
        key_bytes({"id": poison.key}),
        envelope("u", after={**poison.row, "bogus": 1}, ts_ms=poison.at_ms, **where),
    )

    split = first_message[50]
    send(services.kafka_bootstrap, scenario.topic, messages[:split])
    cut = admin.delete_records([TopicPartition(scenario.topic, 0, first_message[10])])
    for future in cut.values():
        future.result(timeout=30)
    run_service(scenario.settings(), until_idle=1)
    send(services.kafka_bootstrap, scenario.topic, messages[split:])
    scenario.move_offsets(first_message[65])
    run_service(scenario.settings(), until_idle=1)
    send(services.kafka_bootstrap, scenario.tx_topic, transaction_events(changes, scenario.table))
    return gaps


def check_transaction_adapter(scenario: Scenario, gaps: Gaps, window: dict[str, Any]) -> None:
    settings = scenario.settings(adapter="debezium_tx", transaction_topic=scenario.tx_topic)
    run = sweep_once(settings, replay=False, **window)
    changes = gaps.changes
    short = {f"{scenario.table}:*:{c.tx}" for c in changes if c.change_id in gaps.lost}
    assert (run.status, set(run.missed_ids)) == ("ok", short)
    assert run.applied == len({c.tx for c in changes}) - len(short)


def check_topic_adapter(scenario: Scenario, gaps: Gaps, window: dict[str, Any]) -> None:
    run = sweep_once(scenario.settings(adapter="kafka_topic"), replay=False, **window)
    changes, unmapped = gaps.changes, gaps.changes[gaps.unmapped].change_id
    skipped = {changes[i].change_id for i in gaps.skipped} & gaps.expected_missed()
    poison = f"kafka:{scenario.topic}:0:{gaps.first_message[gaps.undecodable]}"
    assert set(run.missed_ids) == skipped | {unmapped, poison}, "skipped, quarantined; not deleted"
    reasons = dict(scenario.control("SELECT change_id, reason FROM {s}.missed_changes"))
    assert reasons[poison].startswith("quarantined (undecodable)")
    assert reasons[unmapped].startswith("quarantined (unmapped)")
    assert all(reasons[i].startswith("skipped") for i in skipped)
    scenario.control("DELETE FROM {s}.missed_changes RETURNING 1")


def test_gaps_are_found_exactly_replayed_and_the_target_equals_the_source(
    scenario: Scenario, services: Services, kafka_admin: AdminClient
) -> None:
    started = dt.datetime.now(dt.UTC)
    changes = scenario.workload(transactions=70, keys=100, seed=11)
    gaps = publish_with_gaps(scenario, changes, services, kafka_admin)
    ledger = scenario.control("SELECT count(*) FROM {s}.ledger")
    assert ledger == [(len(changes) - len(gaps.lost),)]
    expected = gaps.expected_missed()
    assert 10 < len(expected) < len(gaps.lost), "some lost changes were superseded, most not"

    window = {
        "window_from": started - dt.timedelta(minutes=1),
        "window_to": dt.datetime.now(dt.UTC),
    }
    check_transaction_adapter(scenario, gaps, window)
    check_topic_adapter(scenario, gaps, window)

    run = sweep_once(scenario.settings())
    assert run.status == "ok" and set(run.missed_ids) == expected, run
    assert run.applied + run.superseded + run.missed == len(changes) and run.in_flight == 0
    assert (run.replayed, run.replay_failed, run.replay_pending) == (len(expected), 0, 0)
    assert scenario.rows(scenario.target) == scenario.rows(scenario.source)
    statuses = scenario.control("SELECT DISTINCT status, attempts FROM {s}.missed_changes")
    assert statuses == [("replayed", 1)]

    assert_second_sweeps_change_nothing(scenario, run, len(changes))


def assert_second_sweeps_change_nothing(scenario: Scenario, first: SweepRun, total: int) -> None:
    def snapshot() -> tuple[Any, ...]:
        return (
            scenario.rows(scenario.target),
            scenario.control("SELECT count(*), max(applied_at) FROM {s}.ledger"),
            scenario.control("SELECT * FROM {s}.key_state ORDER BY key_text"),
            scenario.control("SELECT * FROM {s}.missed_changes ORDER BY change_id"),
        )

    before = snapshot()
    later = sweep_once(scenario.settings())
    assert later.missed == 0 and later.window_from == first.window_to, later
    again = sweep_once(
        scenario.settings(), window_from=first.window_from, window_to=first.window_to
    )
    assert (again.status, again.missed, again.in_flight) == ("ok", 0, 0), again
    assert again.applied + again.superseded == total
    assert snapshot() == before, "a second sweep writes nothing"
    runs = scenario.control(
        "SELECT status, missed FROM {s}.sweep_runs WHERE adapter = 'pg_trigger' ORDER BY id"
    )
    assert runs == [("ok", first.missed), ("ok", 0), ("ok", 0)]


def test_one_sweeper_at_a_time(scenario: Scenario) -> None:
    scenario.workload(transactions=5, keys=5, seed=3)
    settings = scenario.settings()
    holder = scenario.source.engine.connect()
    holder.begin()
    holder.execute(
        sa.text(f'LOCK TABLE "{scenario.source.schema}".changes IN ACCESS EXCLUSIVE MODE')
    )
    results: list[SweepRun] = []
    first = threading.Thread(target=lambda: results.append(sweep_once(settings, replay=False)))
    first.start()
    try:
        wait_until(lambda: sweeper_locked(scenario), "the first sweeper to take the lock")
        second = sweep_once(settings, replay=False)
    finally:
        holder.rollback()
        holder.close()
        first.join(60)
    assert second.status == SKIPPED and second.run_id is None
    assert [r.status for r in results] == ["ok"] and results[0].missed > 0
    assert scenario.control("SELECT status FROM {s}.sweep_runs") == [("ok",)]


def sweeper_locked(scenario: Scenario) -> bool:
    found = scenario.control(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        f"AND objsubid = 2 AND objid = hashtext('{scenario.target.schema}')::oid"
    )
    return bool(found[0][0])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
    while dt.datetime.now() < deadline:
        if condition():
            return
        threading.Event().wait(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def test_the_service_runs_the_sweeper_beside_its_loop(
    scenario: Scenario, services: Services
) -> None:
    changes = scenario.workload(transactions=10, keys=8, seed=5)
    schema = scenario.source.schema
    send(services.kafka_bootstrap, scenario.topic, [m for c in changes for m in c.message(schema)])
    stats = run_service(scenario.settings(enabled=True, interval=0.5), until_idle=2)
    assert stats.applied + stats.superseded == len(changes)
    assert not [t for t in threading.enumerate() if t.name == "cdcr-sweeper"], "stopped with it"
    runs = scenario.control("SELECT status, missed FROM {s}.sweep_runs")
    assert runs and {status for status, _ in runs} <= {"ok"}, runs
    assert scenario.rows(scenario.target) == scenario.rows(scenario.source)


def test_changes_the_group_has_not_read_are_in_flight_and_hold_the_watermark(
    scenario: Scenario, services: Services
) -> None:
    schema = scenario.source.schema
    first = scenario.workload(transactions=8, keys=50, seed=7)
    send(services.kafka_bootstrap, scenario.topic, [m for c in first for m in c.message(schema)])
    run_service(scenario.settings(), until_idle=1)
    more = scenario.workload(transactions=5, keys=50, seed=8)
    send(services.kafka_bootstrap, scenario.topic, [m for c in more for m in c.message(schema)])

    lagging = sweep_once(scenario.settings())
    assert (lagging.missed, lagging.in_flight) == (0, len(more)), lagging
    assert lagging.applied + lagging.superseded == len(first)
    held = dt.datetime.fromtimestamp(more[0].at_ms / 1000, dt.UTC)
    assert lagging.window_to is not None
    assert abs((lagging.window_to - held).total_seconds()) < 0.002, "held at the first in flight"

    run_service(scenario.settings(), until_idle=1)
    caught_up = sweep_once(scenario.settings())
    assert caught_up.window_from == lagging.window_to
    assert (caught_up.applied + caught_up.superseded, caught_up.missed) == (len(more), 0)
    assert caught_up.in_flight == 0


def test_cli_and_retention_of_the_change_log(
    scenario: Scenario, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    changes = scenario.workload(transactions=6, keys=20, seed=9)
    config = {
        **scenario.base,
        "sweeper": {"changelog_schema": scenario.source.schema, "grace": 0, "retention": 3600},
    }
    path = tmp_path / "cdc-recon.yml"
    path.write_text(yaml.safe_dump(config))
    args = ["-c", str(path)]
    assert main([*args, "source", "install", "--table", scenario.table]) == 0
    assert f"installed {scenario.table} (key id)" in capsys.readouterr().out

    assert main([*args, "sweep", "--once", "--json", "--no-replay"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["status"], report["missed"], report["replayed"]) == ("ok", len(changes), 0)
    assert sorted(report["missed_ids"]) == sorted(c.change_id for c in changes)
    assert main([*args, "sweep", "--from", "-1h", "--to", "now", "--no-replay"]) == 0
    shown = capsys.readouterr().out
    assert "missed" in shown and "pg_trigger" in shown

    # three entries older than the retention, and already swept: the next run prunes them
    with scenario.source.engine.begin() as conn:
        conn.execute(
            sa.text(
                f'UPDATE "{scenario.source.schema}".changes SET changed_at = changed_at - '
                "interval '2 hours' WHERE id IN (SELECT id FROM "
                f'"{scenario.source.schema}".changes ORDER BY id LIMIT 3)'
            )
        )
    assert main([*args, "sweep", "--once", "--no-replay"]) == 0
    with scenario.source.engine.connect() as conn:
        left = conn.execute(sa.text(f'SELECT count(*) FROM "{scenario.source.schema}".changes'))
        assert left.scalar() == len(changes) - 3, "entries past retention and swept are pruned"
