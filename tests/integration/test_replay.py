"""Replay against the real Kafka and PostgreSQL: windows, missed changes, source re-reads.

Each test gets its own topic, source and target schema and control tables. Messages are
written with explicit timestamps, so that windows are exact. The missed-change tests write
to a real source table and build each Debezium message from the writing transaction's own
LSN and xid, as the connector would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from cdc_recon.apply.applier import Applier
from cdc_recon.batch import Message
from cdc_recon.codecs.messages import decode_message
from cdc_recon.config import Settings, load_settings
from cdc_recon.control_schema import init_control_schema
from cdc_recon.events import change_id, key_text
from cdc_recon.exceptions import SourceBusy
from cdc_recon.pg.engine import create_engine
from cdc_recon.replay import MissedChange, ReplaySummary, replay_missed, replay_window
from cdc_recon.source_db.rows import SourceRows
from tests.conftest import Database, Services, unique_name, wait_for
from tests.integration.events import envelope, key_bytes

pytestmark = pytest.mark.integration

Row = tuple[int, str, str | None]
Sent = tuple[bytes, bytes | None, int]  # key, value, timestamp


def produce(bootstrap: str, topic: str, messages: Sequence[Sent]) -> list[int]:
    """Write `messages` with their timestamps; returns their offsets, in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    offsets: dict[int, int] = {}
    errors: list[str] = []

    def delivered(index: int) -> Callable[[Any, Any], None]:
        def report(error: Any, msg: Any) -> None:
            if error is not None:
                errors.append(str(error))
            else:
                offsets[index] = msg.offset()

        return report

    for index, (key, value, ts) in enumerate(messages):
        producer.produce(topic, key=key, value=value, timestamp=ts, on_delivery=delivered(index))
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors, errors
    return [offsets[i] for i in range(len(messages))]


@dataclass
class Pipeline:
    settings: Settings
    topic: str
    source: Database
    target: Database
    services: Services
    table: str  # the source table as events name it: schema.customers
    sent: list[tuple[Sent, int]] = field(default_factory=list)  # with its offset

    def target_rows(self) -> dict[int, Row]:
        return _rows(self.target)

    def source_rows(self) -> dict[int, Row]:
        return _rows(self.source)

    def count(self, control_table: str) -> int:
        with self.target.engine.connect() as conn:
            sql = f'SELECT count(*) FROM "{self.target.schema}".{control_table}'
            return int(conn.execute(sa.text(sql)).scalar_one())

    def ledger_ids(self) -> set[str]:
        with self.target.engine.connect() as conn:
            sql = f'SELECT change_id FROM "{self.target.schema}".ledger'
            return {row[0] for row in conn.execute(sa.text(sql))}

    def send(self, messages: Sequence[Sent]) -> list[int]:
        offsets = produce(self.services.kafka_bootstrap, self.topic, messages)
        self.sent.extend(zip(messages, offsets, strict=True))
        return offsets

    def apply_offsets(self, offsets: Sequence[int]) -> None:
        """What the service does, for the messages at `offsets` only."""
        wanted = set(offsets)
        items = [
            decode_message(Message(self.topic, 0, offset, key, value, ts), "auto", None)
            for (key, value, ts), offset in self.sent
            if offset in wanted
        ]
        applier = Applier(self.target.engine, self.settings)
        applier.prepare()
        try:
            applier.apply(items, {}, "test")
        finally:
            applier.close()


def _rows(db: Database) -> dict[int, Row]:
    with db.engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT id, name, email FROM {db.table('customers')}"))
        return {row[0]: (row[0], row[1], row[2]) for row in found}


@pytest.fixture
def pipeline(
    services: Services,
    source_db: Database,
    target_db: Database,
    topic_factory: Callable[..., str],
) -> Iterator[Pipeline]:
    ddl = "(id int PRIMARY KEY, name text NOT NULL, email text)"
    for db in (source_db, target_db):
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {db.table('customers')} {ddl}"))
    init_control_schema(target_db.engine, target_db.schema)
    topic = topic_factory("replay")
    changelog = unique_name("cl")
    settings = load_settings(
        kafka_bootstrap=services.kafka_bootstrap,
        source_url=services.source_url,
        target_url=services.target_url,
        group_id=unique_name("cdcr-replay"),
        topics=[topic],
        control_schema=target_db.schema,
        service={"batch_size": 7},
        sweeper={"changelog_schema": changelog},
        tables=[
            {
                "source": f"{source_db.schema}.customers",
                "target": f"{target_db.schema}.customers",
                "key": ["id"],
            }
        ],
    )
    yield Pipeline(settings, topic, source_db, target_db, services, f"{source_db.schema}.customers")
    with source_db.engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{changelog}" CASCADE'))


# -- windows: synthetic Debezium events with increasing positions --------------------------


class Feed:
    """Debezium events of one table with increasing LSN, xid and timestamp; and the rows
    they leave, as the truth to compare the target with."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.n = 0
        self.rows: dict[int, Row] = {}

    def group(self, base: datetime, ops: Sequence[tuple[str, int, str]]) -> list[Sent]:
        """`("c"|"u"|"d", id, name)` changes timestamped from `base`, a millisecond apart."""
        sent: list[Sent] = []
        start_ms = int(base.timestamp() * 1000)
        for index, (op, key, name) in enumerate(ops):
            self.n += 1
            row = {"id": key, "name": name, "email": f"{key}@x.org"}
            where = {"lsn": 1000 + self.n * 10, "tx": 500 + self.n, "ts_ms": start_ms + index}
            if op == "d":
                value = envelope("d", schema=self.schema, table="customers", before=row, **where)
                self.rows.pop(key, None)
            else:
                value = envelope(op, schema=self.schema, table="customers", after=row, **where)
                self.rows[key] = (key, name, row["email"])
            sent.append((key_bytes({"id": key}), value, start_ms + index))
        return sent

    def change_ids(self, sent: Sequence[Sent]) -> set[str]:
        ids = set()
        for key, value, _ in sent:
            assert value is not None
            tx = str(json.loads(value)["source"]["txId"])
            row_key = key_text([json.loads(key)["id"]])
            ids.add(change_id(f"{self.schema}.customers", row_key, tx))
        return ids


NOW = datetime.now(UTC).replace(microsecond=0)
A, B, C = (NOW - timedelta(minutes=m) for m in (30, 20, 10))
A_OPS = [("c", k, f"a{k}") for k in range(1, 7)]
B_OPS = [("u", 1, "b1"), ("u", 2, "b2"), ("d", 3, ""), ("c", 7, "b7"), ("u", 1, "b1x")]
C_OPS = [("u", 1, "c1"), ("d", 4, ""), ("u", 7, "c7")]


def _windows(
    pipeline: Pipeline, extra_b: Sequence[Sent] = ()
) -> tuple[Feed, list[Sent], list[Sent], list[Sent]]:
    """Windows A, B, C of changes (C ends with a tombstone), written in time order."""
    feed = Feed(pipeline.source.schema)
    a, b, c = feed.group(A, A_OPS), feed.group(B, B_OPS), feed.group(C, C_OPS)
    tombstone = (key_bytes({"id": 4}), None, int(C.timestamp() * 1000) + 50)
    pipeline.send([*a, *b, *extra_b, *c, tombstone])
    return feed, a, b, c


def _only(ops: Sequence[tuple[str, int, str]]) -> dict[int, Row]:
    rows: dict[int, Row] = {}
    for op, key, name in ops:
        if op == "d":
            rows.pop(key, None)
        else:
            rows[key] = (key, name, f"{key}@x.org")
    return rows


def test_a_window_applies_exactly_its_changes_and_twice_changes_nothing(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    feed, _, b, _ = _windows(pipeline)
    first = _cli_replay(pipeline, tmp_path, B, C)
    assert first == {
        **ReplaySummary(read=5, applied=5).as_dict(),
        "from": B.isoformat(),
        "to": C.isoformat(),
    }
    assert pipeline.target_rows() == _only(B_OPS)
    assert pipeline.ledger_ids() == feed.change_ids(b)
    assert pipeline.count("offsets") == 0, "a replay never stores the service's offsets"

    second = replay_window(pipeline.settings, start=B, end=C)
    assert second == ReplaySummary(read=5, duplicates=5)
    assert pipeline.target_rows() == _only(B_OPS)
    assert pipeline.count("ledger") == 5


def test_older_windows_replayed_after_newer_ones_do_not_regress_rows(pipeline: Pipeline) -> None:
    feed, a, b, c = _windows(pipeline)
    newest = replay_window(pipeline.settings, start=C, end=NOW + timedelta(minutes=1))
    assert (newest.read, newest.applied, newest.skipped) == (4, 3, 1)  # and the tombstone
    middle = replay_window(pipeline.settings, start=B, end=C)
    oldest = replay_window(pipeline.settings, start=A - timedelta(minutes=1), end=B)
    assert middle.superseded == 3 and middle.applied == 2  # keys 1 (twice) and 7 are newer
    assert oldest.superseded == 4 and oldest.applied == 2  # 1, 2, 3, 4 hold newer positions
    assert pipeline.target_rows() == feed.rows, "the newest value of every key, deletes kept"
    assert pipeline.ledger_ids() == feed.change_ids([*a, *b, *c])


def test_dry_run_writes_nothing_and_predicts_the_real_run(pipeline: Pipeline) -> None:
    _windows(pipeline)
    replay_window(pipeline.settings, start=C, end=NOW + timedelta(minutes=1))
    before = (pipeline.target_rows(), pipeline.count("ledger"), pipeline.count("key_state"))
    seen: list[tuple[int, int | None]] = []
    start, end = A - timedelta(minutes=1), C
    dry = replay_window(
        pipeline.settings,
        start=start,
        end=end,
        dry_run=True,
        progress=lambda r, t: seen.append((r, t)),
    )
    assert (pipeline.target_rows(), pipeline.count("ledger"), pipeline.count("key_state")) == before
    assert dry.dry_run and (dry.read, dry.applied, dry.superseded) == (11, 6, 5)
    assert seen[0] == (0, 11) and seen[-1] == (11, 11)

    real = replay_window(pipeline.settings, start=start, end=end)
    assert (real.applied, real.superseded, real.duplicates) == (dry.applied, dry.superseded, 0)
    again = replay_window(pipeline.settings, start=start, end=end, dry_run=True)
    assert (again.applied, again.superseded, again.duplicates) == (0, 0, 11)


def test_a_table_filter_skips_other_tables(pipeline: Pipeline) -> None:
    other = envelope("c", schema="else", table="where", lsn=1, tx=1, ts_ms=1, after={"id": 1})
    _windows(pipeline, extra_b=[(b'{"id":1}', other, int(B.timestamp() * 1000) + 100)])
    filtered = replay_window(pipeline.settings, start=B, end=C, tables=[pipeline.table])
    assert (filtered.read, filtered.applied, filtered.skipped, filtered.failed) == (6, 5, 1, 0)
    unfiltered = replay_window(pipeline.settings, start=B, end=C)
    assert unfiltered.failed == 1, "an unmapped table is quarantined, as the service does"
    assert pipeline.count("failures") == 1


def _cli_replay(pipeline: Pipeline, tmp_path: Path, start: datetime, end: datetime) -> Any:
    config = tmp_path / "cdc-recon.yml"
    data = pipeline.settings.masked()
    data.update(source_url=pipeline.services.source_url, target_url=pipeline.services.target_url)
    config.write_text(yaml.safe_dump(data))
    command = [sys.executable, "-m", "cdc_recon.cli", "-c", str(config), "replay"]
    command += ["--from", start.isoformat(), "--to", end.isoformat(), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- missed changes: real source writes, messages carrying their real LSN and xid ----------


@dataclass
class Written:
    sent: Sent
    missed: MissedChange  # as the sweeper would report it, without Kafka coordinates


class Source:
    """Writes to the real source table, one transaction per change, and builds the change's
    Debezium message from that transaction's LSN and xid."""

    POSITION = (
        "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint, "
        "txid_current() & 4294967295, (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    )

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.db = pipeline.source

    def write(self, op: str, key: int, name: str = "") -> Written:
        table = self.db.table("customers")
        statement = {
            "c": f"INSERT INTO {table} VALUES (:id, :name, :email)",
            "u": f"UPDATE {table} SET name = :name WHERE id = :id",
            "d": f"DELETE FROM {table} WHERE id = :id",
        }[op]
        with self.db.engine.begin() as conn:
            conn.execute(sa.text(statement), {"id": key, "name": name, "email": f"{key}@x.org"})
            lsn, xid, ts = conn.execute(sa.text(self.POSITION)).one()
            row = conn.execute(sa.text(f"SELECT * FROM {table} WHERE id = :id"), {"id": key})
            image = dict(row.mappings().one()) if op != "d" else {"id": key}
        where = {"schema": self.db.schema, "table": "customers", "lsn": lsn, "tx": xid, "ts_ms": ts}
        value = (
            envelope(op, before=image, **where) if op == "d" else envelope(op, after=image, **where)
        )
        kt = key_text([key])
        table_name = self.pipeline.table
        missed = MissedChange(
            change_id(table_name, kt, str(xid)),
            table_name,
            kt,
            str(xid),
            (lsn,),
            datetime.fromtimestamp(ts / 1000, UTC),
        )
        return Written((key_bytes({"id": key}), value, ts), missed)


def _send(pipeline: Pipeline, written: Sequence[Written]) -> list[int]:
    return pipeline.send([w.sent for w in written])


def _located(written: Written, pipeline: Pipeline, offset: int) -> MissedChange:
    m = written.missed
    return MissedChange(
        m.change_id,
        m.source_table,
        m.key_text,
        m.tx,
        m.position,
        m.changed_at,
        pipeline.topic,
        0,
        offset,
    )


def test_missed_changes_with_coordinates_are_replayed_from_kafka(pipeline: Pipeline) -> None:
    src = Source(pipeline)
    writes = [src.write("c", k, f"n{k}") for k in range(1, 6)]
    writes += [src.write("u", 2, "late"), src.write("d", 3), src.write("u", 4, "four")]
    offsets = _send(pipeline, writes)
    missed_at = {5, 6}
    pipeline.apply_offsets([o for i, o in enumerate(offsets) if i not in missed_at])
    assert pipeline.target_rows() != pipeline.source_rows()

    missed = [_located(writes[i], pipeline, offsets[i]) for i in sorted(missed_at)]
    outcomes = replay_missed(pipeline.settings, missed)
    assert {k: o.status for k, o in outcomes.items()} == {c.change_id: "replayed" for c in missed}
    assert all(o.detail.startswith("from Kafka") for o in outcomes.values()), outcomes
    assert pipeline.target_rows() == pipeline.source_rows()
    assert {c.change_id for c in missed} <= pipeline.ledger_ids()
    ledger = pipeline.count("ledger")
    again = replay_missed(pipeline.settings, missed)
    assert {o.status for o in again.values()} == {"replayed"}
    assert (pipeline.count("ledger"), pipeline.target_rows()) == (ledger, pipeline.source_rows())


def test_missed_changes_without_coordinates_are_re_read_from_the_source(
    pipeline: Pipeline,
) -> None:
    src = Source(pipeline)
    writes = [src.write("c", k, f"n{k}") for k in range(1, 7)]
    writes += [src.write("u", 5, "five")]
    missed = [src.write("u", 2, "two"), src.write("d", 3), src.write("u", 5, "FIVE")]
    offsets = _send(pipeline, [*writes, *missed])
    pipeline.apply_offsets(offsets[: len(writes)])
    assert pipeline.target_rows() != pipeline.source_rows()

    outcomes = replay_missed(pipeline.settings, [w.missed for w in missed])
    details = [outcomes[w.missed.change_id].detail for w in missed]
    assert [outcomes[w.missed.change_id].status for w in missed] == ["replayed"] * 3
    assert [d.rsplit("(", 1)[1] for d in details] == ["row)", "deleted)", "row)"], details
    assert all(d.startswith("no Kafka coordinates; re-read from the source") for d in details)
    assert pipeline.target_rows() == pipeline.source_rows()

    with pipeline.target.engine.connect() as conn:
        stored = dict(
            conn.execute(
                sa.text(f'SELECT key_text, position[1] FROM "{pipeline.target.schema}".key_state')
            ).all()
        )
    for w in missed:  # the sweeper will find each missed change superseded
        assert w.missed.position is not None and stored[w.missed.key_text] > w.missed.position[0]

    pipeline.apply_offsets(offsets[len(writes) :])  # the lost messages turn up after all
    assert pipeline.target_rows() == pipeline.source_rows(), "a late message must not regress"


def test_a_message_below_the_low_watermark_falls_back_to_the_source(
    pipeline: Pipeline, kafka_admin: AdminClient
) -> None:
    src = Source(pipeline)
    writes = [src.write("c", k, f"n{k}") for k in range(1, 4)]
    writes += [src.write("u", 1, "gone"), src.write("c", 4, "n4"), src.write("u", 2, "kept")]
    offsets = _send(pipeline, writes)
    pipeline.apply_offsets([o for i, o in enumerate(offsets) if i not in (3, 5)])
    deleted = kafka_admin.delete_records([TopicPartition(pipeline.topic, 0, offsets[4])])
    for future in deleted.values():
        future.result(timeout=30)

    missed = [_located(writes[i], pipeline, offsets[i]) for i in (3, 5)]
    outcomes = replay_missed(pipeline.settings, missed)
    expired, retained = outcomes[missed[0].change_id], outcomes[missed[1].change_id]
    assert expired.status == retained.status == "replayed"
    assert "is no longer retained; re-read from the source" in expired.detail, expired
    assert retained.detail.startswith("from Kafka"), retained
    assert pipeline.target_rows() == pipeline.source_rows()


# -- windows from the source database ------------------------------------------------------


def test_source_window_without_a_change_log_re_reads_every_row(pipeline: Pipeline) -> None:
    src = Source(pipeline)
    for k in range(1, 10):
        src.write("c", k, f"n{k}")
    start, end = datetime.now(UTC) - timedelta(minutes=5), datetime.now(UTC) + timedelta(minutes=1)
    summary = replay_window(pipeline.settings, start=start, end=end, source="source-db")
    assert (summary.read, summary.applied) == (9, 9)  # in chunks of the batch size (7)
    assert pipeline.target_rows() == pipeline.source_rows()


def test_source_window_with_the_change_log_re_reads_changed_keys_and_deletes(
    pipeline: Pipeline,
) -> None:
    from cdc_recon.sweep.adapters.pg_trigger import PgTriggerLog

    log = PgTriggerLog(pipeline.settings)
    try:
        log.install([pipeline.table])
    finally:
        log.close()
    src = Source(pipeline)
    for k in range(1, 5):
        src.write("c", k, f"n{k}")
    pipeline.apply_offsets(_send(pipeline, [src.write("u", 4, "seen")]))
    start = datetime.now(UTC)
    src.write("u", 2, "two")
    src.write("d", 3)
    end = datetime.now(UTC) + timedelta(seconds=1)

    dry = replay_window(pipeline.settings, start=start, end=end, source="source-db", dry_run=True)
    assert (dry.read, dry.applied, pipeline.count("ledger")) == (2, 2, 1)
    summary = replay_window(pipeline.settings, start=start, end=end, source="source-db")
    assert (summary.read, summary.applied, summary.failed) == (2, 2, 0)
    assert pipeline.target_rows() == {2: (2, "two", "2@x.org"), 4: (4, "seen", "4@x.org")}


# -- the re-read's locking, against concurrent source transactions -------------------------


def _activity(db: Database, app: str, condition: str) -> bool:
    with db.engine.connect() as conn:
        sql = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = :app AND {condition}"
        return bool(conn.execute(sa.text(sql), {"app": app}).scalar_one())


def _reader(pipeline: Pipeline) -> tuple[SourceRows, str, sa.Engine]:
    app = unique_name("reread")
    engine = create_engine(f"{pipeline.services.source_url}?application_name={app}")
    return SourceRows(engine), app, engine


def test_a_re_read_waits_for_a_transaction_changing_the_row(pipeline: Pipeline) -> None:
    src = Source(pipeline)
    src.write("c", 1, "old")
    rows, app, engine = _reader(pipeline)
    mapping = pipeline.settings.tables[0]
    with ThreadPoolExecutor(1) as pool, pipeline.source.engine.connect() as writer:
        writer.execute(sa.text(f"UPDATE {pipeline.source.table('customers')} SET name = 'new'"))
        lsn = writer.execute(sa.text("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint"))
        update_lsn = lsn.scalar_one()
        future = pool.submit(rows.read_keys, mapping, ['["1"]'])
        wait_for(lambda: _activity(pipeline.source, app, "wait_event_type = 'Lock'"), "a lock wait")
        writer.commit()
        found = future.result(timeout=30)
    engine.dispose()
    (read,) = found.reads
    assert read.rows['["1"]']["name"] == "new" and read.lsn > update_lsn


def test_an_absent_key_waits_for_the_tables_open_writers(pipeline: Pipeline) -> None:
    rows, app, engine = _reader(pipeline)
    mapping = pipeline.settings.tables[0]
    table = pipeline.source.table("customers")
    with ThreadPoolExecutor(1) as pool, pipeline.source.engine.connect() as writer:
        writer.execute(sa.text(f"INSERT INTO {table} VALUES (9, 'nine', NULL)"))
        future = pool.submit(rows.read_keys, mapping, ['["9"]', '["8"]'])
        wait_for(lambda: _activity(pipeline.source, app, "query LIKE '%ANY(%'"), "the writers poll")
        writer.commit()
        found = future.result(timeout=30)
    engine.dispose()
    present = {k: r["name"] for read in found.reads for k, r in read.rows.items()}
    absent = {k for read in found.reads for k in read.absent}
    assert present == {'["9"]': "nine"} and absent == {'["8"]'} and not found.unresolved


def test_a_row_locked_past_the_lock_timeout_makes_the_source_busy(pipeline: Pipeline) -> None:
    src = Source(pipeline)
    missed = src.write("c", 1, "one").missed
    rows, _, engine = _reader(pipeline)
    slow = SourceRows(engine, lock_timeout=0.2)
    with pipeline.source.engine.connect() as writer:
        writer.execute(sa.text(f"UPDATE {pipeline.source.table('customers')} SET name = 'x'"))
        with pytest.raises(SourceBusy, match="stayed locked"):
            slow.read_keys(pipeline.settings.tables[0], [missed.key_text])
        writer.rollback()
    engine.dispose()
    (read,) = rows.read_keys(pipeline.settings.tables[0], [missed.key_text]).reads
    assert read.rows[missed.key_text]["name"] == "one"
