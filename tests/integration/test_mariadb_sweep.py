"""The MariaDB sweeper on the real stack: MariaDB → Debezium MariaDB connector → Kafka →
cdc-recon → PostgreSQL, with the trigger change log (`sweeper.adapter: mariadb_trigger`).

- the identity experiment: what the triggers log is, entry for entry, what the
  connector emits as (table, key_text, op, floor(source.ts_ms / 1000));
- real losses between MariaDB and the target, found exactly and healed: offsets moved
  past messages, a quarantined message, messages deleted from Kafka (only the source
  re-read can heal those), and a connector restarted past a gap (deleted with its
  offsets, re-registered with `snapshot.mode=no_data`); afterwards the target equals the
  source row for row;
- the limit: two updates of one key in one second, one lost, is a shortfall of one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from cdc_recon.codecs import decode
from cdc_recon.config import Settings, load_settings
from cdc_recon.control_schema import init_control_schema
from cdc_recon.mariadb.connection import connect, parse_url
from cdc_recon.replay import replay_window
from cdc_recon.run import run_service
from cdc_recon.sweep.adapters.kafka_lookup import identity_of
from cdc_recon.sweep.adapters.mariadb_trigger import MariaDbTriggerLog
from cdc_recon.sweep.sweeper import sweep_once
from cdc_recon.workload import TABLES, WorkloadConfig
from cdc_recon.workload.mariadb import (
    create_mariadb_tables,
    create_target_tables,
    mariadb_mappings,
    run_mariadb_workload,
)
from tests.conftest import ROOT, Database, Services, wait_for

pytestmark = pytest.mark.integration

MAX_U64 = 2**64 - 1
COLUMNS = "id, name, amount, flag, born, doc, data"
MARIADB_DDL = (
    "(id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(40) NOT NULL, amount DECIMAL(10,2), "
    "flag TINYINT(1), born DATETIME(6), doc JSON, data BLOB)"
)
TARGET_DDL = (
    "(id numeric(20) PRIMARY KEY, name text NOT NULL, amount numeric(10,2), flag boolean, "
    "born timestamp, doc text, data bytea)"
)
Identity = tuple[str, str, str, int]


def mariadb_url() -> str:
    url = os.environ.get("CDC_RECON_MARIADB_URL")
    if url:
        return url
    env = subprocess.run([str(ROOT / "scripts/stack"), "env"], capture_output=True, text=True)
    for line in env.stdout.splitlines():
        if line.startswith("export CDC_RECON_MARIADB_URL="):
            return line.split("=", 1)[1].strip().strip("'\"")
    pytest.fail("no CDC_RECON_MARIADB_URL: is the stack's MariaDB up (scripts/stack up)?")


def stack(*args: str) -> str:
    done = subprocess.run(
        [str(ROOT / "scripts/stack"), "connector", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, f"scripts/stack connector {args}: {done.stderr[-2000:]}"
    return done.stdout


class MariaPipeline:
    """MariaDB tables with the change log, their PostgreSQL targets, a connector."""

    def __init__(self, services: Services, target: Database, tables: dict[str, str]) -> None:
        self.services, self.target = services, target
        self.url = mariadb_url()
        self.suffix = uuid.uuid4().hex[:8]
        self.name = f"mdbsw-{self.suffix}"
        self.log_db = f"cdcr_{self.suffix}"
        self.tables = {f"{t}_{self.suffix}": ddl for t, ddl in tables.items()}
        self.group = f"cdcr-mdb-{self.suffix}"
        self.registered = False

    def setup(self, targets: dict[str, str], keys: dict[str, list[str]]) -> MariaPipeline:
        self.sql(*(f"CREATE TABLE source.{t} {ddl}" for t, ddl in self.tables.items()))
        with self.target.engine.begin() as conn:
            for table, ddl in targets.items():
                conn.execute(sa.text(f"CREATE TABLE {self.target.table(self.t(table))} {ddl}"))
        init_control_schema(self.target.engine, self.target.schema)
        self.keys = {self.t(t): k for t, k in keys.items()}
        log = MariaDbTriggerLog(self.settings())
        installed = log.install([f"source.{t}" for t in self.tables])
        assert [i.table for i in installed] == [f"source.{t}" for t in self.tables]
        self.register()
        return self

    def t(self, short: str) -> str:
        return f"{short}_{self.suffix}"

    def register(self, *extra: str) -> None:
        include = ",".join(f"source.{t}" for t in self.tables)
        stack("register", self.name, f"table.include.list={include}", *extra, "--source", "mariadb")
        self.registered = True

    def unregister(self) -> None:
        stack("delete", self.name, "--source", "mariadb")
        self.registered = False

    @property
    def topics(self) -> list[str]:
        return [f"{self.name}.source.{t}" for t in self.tables]

    def settings(self, **sweeper: Any) -> Settings:
        mappings = [
            {
                "source": f"source.{t}",
                "target": f"{self.target.schema}.{t}",
                "key": self.keys[t] if hasattr(self, "keys") else ["id"],
                "connector": "mysql",
            }
            for t in self.tables
        ]
        return load_settings(
            None,
            kafka_bootstrap=self.services.kafka_bootstrap,
            source_url=self.url,
            target_url=self.services.target_url,
            group_id=self.group,
            topics=self.topics,
            dead_letter_topic=f"{self.name}.dead-letter",
            control_schema=self.target.schema,
            kafka={"heartbeat.interval.ms": "500", "session.timeout.ms": "6000"},
            service={"batch_size": 50, "poll_timeout": 0.2, "retry_initial": 0.1},
            tables=mappings,
            sweeper={
                "adapter": "mariadb_trigger",
                "changelog_schema": self.log_db,
                "grace": 0,
                **sweeper,
            },
        )

    def sql(self, *statements: str, params: Any = None) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        with connect(parse_url(self.url)) as conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement, params)
                rows = list(cur.fetchall() or [])
                conn.commit()
        return rows

    def log(self) -> list[Identity]:
        found = self.sql(
            f"SELECT source_table, key_text, op, changed_s FROM {self.log_db}.changes ORDER BY id"
        )
        return [(str(a), str(b), str(c), int(d)) for a, b, c, d in found]

    def messages(self) -> list[tuple[Any, Any]]:
        """Every message of the topics (Kafka message, decoded event or None)."""
        return read_topics(self.services.kafka_bootstrap, self.topics)

    def published(self) -> int:
        """Messages in the topics, tombstones included."""
        return high_marks(self.services.kafka_bootstrap, self.topics)

    def wait_published(self, count: int) -> None:
        """Until the topics' high marks reach `count` messages (tombstones included)."""
        wait_for(
            lambda: self.published() >= count,
            f"the connector {self.name} to publish {count} messages (has {self.published()})",
            timeout=90,
        )

    def wait_closed(self) -> None:
        """Until the change log's newest second is closed (grace 0: the next second)."""
        newest = max(second for *_, second in self.log())
        log = MariaDbTriggerLog(self.settings())
        wait_for(
            lambda: log.closed_until(0).timestamp() > newest,
            f"MariaDB's clock to pass second {newest}",
            timeout=10,
        )

    def source_rows(self, table: str) -> dict[Any, tuple[Any, ...]]:
        rows = self.sql(f"SELECT {COLUMNS} FROM source.{self.t(table)}")
        return {int(r[0]): normal(r) for r in rows}

    def target_rows(self, table: str) -> dict[Any, tuple[Any, ...]]:
        with self.target.engine.connect() as conn:
            rows = conn.execute(
                sa.text(f"SELECT {COLUMNS} FROM {self.target.table(self.t(table))}")
            )
            return {int(r[0]): normal(tuple(r)) for r in rows}

    def control(self, sql: str) -> list[tuple[Any, ...]]:
        with self.target.engine.begin() as conn:
            rows = conn.execute(sa.text(sql.format(s=f'"{self.target.schema}"'))).all()
            return [tuple(row) for row in rows]

    def move_offsets(self, topic: str, next_offset: int) -> None:
        with self.target.engine.begin() as conn:
            moved = conn.execute(
                sa.text(
                    f'UPDATE "{self.target.schema}".offsets SET next_offset = :o '
                    "WHERE group_id = :g AND topic = :t AND kafka_partition = 0"
                ),
                {"o": next_offset, "g": self.group, "t": topic},
            )
            assert moved.rowcount == 1
        consumer = Consumer(
            {"bootstrap.servers": self.services.kafka_bootstrap, "group.id": self.group}
        )
        try:
            consumer.commit(offsets=[TopicPartition(topic, 0, next_offset)], asynchronous=False)
        finally:
            consumer.close()

    def close(self) -> None:
        if self.registered:
            self.unregister()
        MariaDbTriggerLog(self.settings()).uninstall(drop_log=True)
        self.sql(
            *(f"DROP TABLE IF EXISTS source.{t}" for t in self.tables),
            f"DROP DATABASE IF EXISTS {self.log_db}",
        )
        admin = AdminClient({"bootstrap.servers": self.services.kafka_bootstrap})
        for future in admin.delete_topics(self.topics).values():
            try:
                future.result(timeout=30)
            except Exception:  # a topic the connector never created
                pass


def read_topics(bootstrap: str, topics: list[str]) -> list[tuple[Any, Any]]:
    """Every message of partition 0 of `topics`, with its decoded event (None: tombstone)."""
    group = f"probe-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    found: list[tuple[Any, Any]] = []
    try:
        for topic in topics:
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            except KafkaException:  # no such topic: nothing published to it
                continue
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, 0, low)])
            while True:
                m = consumer.poll(5)
                assert m is not None, f"{topic}: nothing read below the high mark {high}"
                if m.error() is None:
                    found.append((m, decode(m.key(), m.value())))
                if (m.offset() or 0) >= high - 1:
                    break
    finally:
        consumer.close()
    return found


def high_marks(bootstrap: str, topics: list[str]) -> int:
    """The sum of partition 0's high marks of `topics` (0 for a topic not created yet)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe-marks"})
    try:
        total = 0
        for topic in topics:
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            except KafkaException:  # the connector has not created the topic yet
                continue
            total += max(high, 0)
        return total
    finally:
        consumer.close()


def normal(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """What the comparison normalises: the key to int, DECIMAL/numeric to Decimal, the
    TINYINT(1) to bool, JSON to its parsed form (MariaDB keeps the text as written,
    PostgreSQL text keeps it too: compared parsed, so whitespace does not count), BLOB and
    bytea to bytes; DATETIME and timestamp compare as naive datetimes."""
    import json

    id_, name, amount, flag, born, doc, data = row
    return (
        int(id_),
        name,
        None if amount is None else Decimal(amount),
        None if flag is None else bool(flag),
        born,
        None if doc is None else json.loads(doc),
        None if data is None else bytes(data),
    )


@pytest.fixture
def pipeline(services: Services, target_db: Database) -> Iterator[MariaPipeline]:
    made = MariaPipeline(
        services,
        target_db,
        {"sw": MARIADB_DDL, "pair": "(a INT, b INT, v INT, PRIMARY KEY (a, b))"},
    )
    made.setup(
        {"sw": TARGET_DDL, "pair": "(a int, b int, v int, PRIMARY KEY (a, b))"},
        {"sw": ["id"], "pair": ["a", "b"]},
    )
    try:
        yield made
    finally:
        made.close()


def kafka_identities(found: list[tuple[Any, Any]], settings: Settings) -> list[Identity]:
    out = []
    for _, event in found:
        if event is not None:
            named = identity_of(event, settings)
            assert named is not None
            out.append(named[0])
    return out


def change_id_of(event: Any, settings: Settings) -> str:
    named = identity_of(event, settings)
    assert named is not None, f"{event.table} is not mapped"
    return named[1]


def row_values(i: int, name: str) -> tuple[Any, ...]:
    return (
        i,
        name,
        Decimal("12.50"),
        i % 2,
        dt.datetime(2024, 2, 29, 23, 59, 59, 123456),
        '{"k": [1, 2]}',
        bytes([0, 255, i % 256]),
    )


INSERT = f"INSERT INTO source.{{t}} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"


def test_identity_experiment(pipeline: MariaPipeline) -> None:
    """Each logged (table, key_text, op, second) is exactly one message's, also inside a
    multi-statement transaction spanning seconds, for a key-changing update (d + c), a
    no-op update (neither side), BIGINT UNSIGNED's top and a composite key."""
    sw, pair = pipeline.t("sw"), pipeline.t("pair")
    with connect(parse_url(pipeline.url)) as conn, conn.cursor() as cur:
        cur.execute(INSERT.format(t=sw), row_values(MAX_U64, "top"))
        cur.execute(INSERT.format(t=sw), row_values(1, "one"))
        conn.commit()
        cur.execute("SET timestamp = UNIX_TIMESTAMP() - 100")  # three seconds, one transaction
        cur.execute(f"UPDATE source.{sw} SET name = 'one-a' WHERE id = 1")
        cur.execute("SET timestamp = UNIX_TIMESTAMP() + 1")
        cur.execute(f"INSERT INTO source.{pair} VALUES (3, 7, 0)")
        cur.execute("SET timestamp = DEFAULT")
        cur.execute(f"UPDATE source.{pair} SET v = 1 WHERE a = 3")
        conn.commit()
        cur.execute(f"UPDATE source.{sw} SET name = name WHERE id = 1")  # changes nothing
        cur.execute(f"UPDATE source.{sw} SET id = 2 WHERE id = 1")  # the key: d + c
        cur.execute(f"DELETE FROM source.{pair} WHERE a = 3 AND b = 7")
        conn.commit()
    log = pipeline.log()
    # 2 inserts, 1 update, insert + update of pair, d + c of the key change, delete
    assert len(log) == 8
    assert (f"source.{sw}", f'["{MAX_U64}"]', "c") in {e[:3] for e in log}
    assert (f"source.{pair}", '["3","7"]', "c") in {e[:3] for e in log}
    pipeline.wait_published(len(log) + 2)  # two deletes, two tombstones
    published = kafka_identities(pipeline.messages(), pipeline.settings())
    assert Counter(published) == Counter(log), "the log and the connector disagree"


def test_losses_found_exactly_and_healed(pipeline: MariaPipeline, kafka_admin: AdminClient) -> None:
    """Four ways to lose changes; the sweeper names each lost change, replays it from
    Kafka while it is there and re-reads it from MariaDB when not; then source == target."""
    sw = pipeline.t("sw")
    topic = f"{pipeline.name}.source.{sw}"
    insert = INSERT.format(t=sw)

    def insert_rows(keys: range, name: str) -> None:
        with connect(parse_url(pipeline.url)) as conn, conn.cursor() as cur:
            for i in keys:
                cur.execute(insert, row_values(i, name))
                conn.commit()

    # (1) deleted from Kafka before the service read them: keys 0-4
    insert_rows(range(0, 10), "first")
    pipeline.wait_published(10)
    before_cut = pipeline.messages()
    for future in kafka_admin.delete_records([TopicPartition(topic, 0, 5)]).values():
        future.result(timeout=30)
    run_service(pipeline.settings(), until_idle=1)
    deleted = kafka_identities(before_cut[:5], pipeline.settings())

    # (2) skipped: the stored offsets moved past keys 10-12; (3) key 13 quarantined
    with pipeline.target.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"ALTER TABLE {pipeline.target.table(sw)} "
                "ADD CONSTRAINT no_poison CHECK (name <> 'poison')"
            )
        )
    insert_rows(range(10, 13), "skipped")
    insert_rows(range(13, 14), "poison")
    insert_rows(range(14, 16), "after")
    pipeline.wait_published(16)
    pipeline.move_offsets(topic, 13)
    run_service(pipeline.settings(), until_idle=1)
    quarantined = pipeline.control("SELECT kafka_offset FROM {s}.failures")
    assert quarantined == [(13,)], "the poison row was not quarantined"
    with pipeline.target.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {pipeline.target.table(sw)} DROP CONSTRAINT no_poison"))
    found = pipeline.messages()
    by_offset = {m.offset(): e for m, e in found if e is not None}
    skipped_ids = {change_id_of(by_offset[o], pipeline.settings()) for o in (10, 11, 12, 13)}

    # (4) the connector deleted with its offsets; changes; re-registered past them
    pipeline.unregister()
    insert_rows(range(16, 19), "gap")
    with connect(parse_url(pipeline.url)) as conn, conn.cursor() as cur:
        cur.execute(f"DELETE FROM source.{sw} WHERE id = 15")
        conn.commit()
    gap = pipeline.log()[-4:]
    pipeline.register("snapshot.mode=no_data")
    insert_rows(range(19, 21), "later")
    pipeline.wait_published(16 + 2)
    run_service(pipeline.settings(), until_idle=1)
    pipeline.wait_closed()

    run = sweep_once(pipeline.settings(), replay=False)
    expected = {f"{t}:{k}:{op}@{s}#1" for t, k, op, s in deleted + gap} | skipped_ids
    assert run.status == "ok", run.detail
    assert set(run.missed_ids) == expected, "not exactly the lost changes"
    assert run.missed == len(expected) == 13  # 5 deleted, 3 skipped, 1 quarantined, 4 gap
    assert run.applied == len(pipeline.log()) - 13
    reasons = dict(
        pipeline.control(
            "SELECT kafka_offset, reason FROM {s}.missed_changes WHERE kafka_offset IS NOT NULL"
        )
    )
    assert reasons[13].startswith("quarantined ("), reasons[13]
    assert all(reasons[o].startswith("skipped: in Kafka") for o in (10, 11, 12)), reasons

    healed = sweep_once(pipeline.settings())
    assert (healed.missed, healed.replayed, healed.replay_failed) == (0, 13, 0), healed.summary()
    outcomes = dict(
        pipeline.control(
            "SELECT change_id, last_error FROM {s}.missed_changes WHERE status = 'replayed'"
        )
    )
    assert len(outcomes) == 13
    from_kafka = {cid for cid, why in outcomes.items() if why.startswith("from Kafka")}
    assert from_kafka == skipped_ids, "skipped and quarantined come back from Kafka"
    assert pipeline.target_rows("sw") == pipeline.source_rows("sw")

    again = sweep_once(pipeline.settings(), window_from=run.window_from, window_to=run.window_to)
    assert (again.missed, again.replayed) == (0, 0), again.summary()
    assert again.applied == len(pipeline.log())


def test_two_changes_in_one_second_one_lost(pipeline: MariaPipeline) -> None:
    """The limit: two updates of one key in one second share an identity; losing one
    is a shortfall of one, which Kafka then names (its GTID)."""
    sw = pipeline.t("sw")
    topic = f"{pipeline.name}.source.{sw}"
    with connect(parse_url(pipeline.url)) as conn, conn.cursor() as cur:
        cur.execute(INSERT.format(t=sw), row_values(7, "seven"))
        conn.commit()
        pipeline.wait_published(1)
        run_service(pipeline.settings(), until_idle=1)
        cur.execute("SET timestamp = UNIX_TIMESTAMP()")  # both updates in this second
        for name in ("first", "second"):
            cur.execute(f"UPDATE source.{sw} SET name = %s WHERE id = 7", (name,))
            conn.commit()
        cur.execute("SET timestamp = DEFAULT")
    pipeline.wait_published(3)
    pipeline.move_offsets(topic, 2)  # the first update (offset 1) is skipped
    run_service(pipeline.settings(), until_idle=1)
    pipeline.wait_closed()
    log = pipeline.log()
    updates = [e for e in log if e[2] == "u"]
    assert len(updates) == 2 and updates[0] == updates[1], "not one identity"

    run = sweep_once(pipeline.settings(), replay=False)
    assert (run.missed, run.applied) == (1, 2), run.summary()
    lost = next(e for m, e in pipeline.messages() if m.offset() == 1)
    assert run.missed_ids == (change_id_of(lost, pipeline.settings()),)
    healed = sweep_once(pipeline.settings())
    assert healed.replayed == 1
    assert pipeline.target_rows("sw") == pipeline.source_rows("sw")

    # `replay --source source-db`: the keys the log shows changed, re-read in a snapshot
    start = dt.datetime.fromtimestamp(log[0][3], tz=dt.UTC)
    end = dt.datetime.fromtimestamp(log[-1][3] + 1, tz=dt.UTC)
    summary = replay_window(pipeline.settings(), start=start, end=end, source="source-db")
    assert (summary.read, summary.applied, summary.failed) == (1, 1, 0), summary
    reread = pipeline.control("SELECT op, tx, position FROM {s}.ledger WHERE op = 'r'")
    assert len(reread) == 1 and reread[0][1].startswith("mariadb-bin."), reread
    assert pipeline.target_rows("sw") == pipeline.source_rows("sw")


def test_source_install_cli(pipeline: MariaPipeline, tmp_path: Path) -> None:
    """`cdc-recon source install/uninstall` against a mariadb:// source_url."""
    table = f"cli_{pipeline.suffix}"
    pipeline.sql(f"CREATE TABLE source.{table} (id INT PRIMARY KEY, v TEXT)")
    config = tmp_path / "cdc-recon.yml"
    settings = pipeline.settings().masked()
    config.write_text(
        yaml.safe_dump(
            {
                "source_url": pipeline.url,
                "target_url": pipeline.services.target_url,
                "sweeper": {"changelog_schema": pipeline.log_db},
                "tables": [],
                "control_schema": settings["control_schema"],
            }
        )
    )

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cdc_recon.cli", "-c", str(config), "source", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "CDC_RECON_SOURCE_URL": pipeline.url},  # the env wins
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    triggers = (
        "SELECT count(*) FROM information_schema.TRIGGERS "
        f"WHERE EVENT_OBJECT_SCHEMA = 'source' AND EVENT_OBJECT_TABLE = '{table}'"
    )
    try:
        installed = cli("install", "--table", f"source.{table}")
        assert installed == f"installed source.{table} (key id)\n"
        assert pipeline.sql(triggers) == [(3,)]
        pipeline.sql(f"INSERT INTO source.{table} VALUES (5, 'x')")
        assert pipeline.log()[-1][:3] == (f"source.{table}", '["5"]', "c")
        assert (
            cli("uninstall", "--table", f"source.{table}") == f"removed trigger on source.{table}\n"
        )
        assert pipeline.sql(triggers) == [(0,)]
    finally:
        pipeline.sql(f"DROP TABLE source.{table}")


def test_the_shop_workload_matches_the_log_change_for_change(
    services: Services, target_db: Database
) -> None:
    """The identity on the shop's MySQL types (CHAR(36) and composite keys, BIGINT
    UNSIGNED, JSON, emoji): a few hundred random changes, none lost; every logged
    change is found applied, none missed, and each matches one of the connector's events."""
    suffix = uuid.uuid4().hex[:8]
    shop = dataclasses.replace(parse_url(mariadb_url()), database=f"shop_{suffix}")
    name, log_db = f"mdbshop-{suffix}", f"cdcr_{suffix}"
    create_mariadb_tables(shop)
    create_target_tables(target_db.engine, target_db.schema)
    init_control_schema(target_db.engine, target_db.schema)
    topics = [f"{name}.{shop.database}.{t.name}" for t in TABLES]
    settings = load_settings(
        None,
        kafka_bootstrap=services.kafka_bootstrap,
        source_url=str(shop),
        target_url=services.target_url,
        group_id=f"cdcr-shop-{suffix}",
        topics=topics,
        dead_letter_topic=f"{name}.dead-letter",
        control_schema=target_db.schema,
        service={"batch_size": 200, "poll_timeout": 0.2},
        tables=mariadb_mappings(shop.database, target_db.schema),
        sweeper={"adapter": "mariadb_trigger", "changelog_schema": log_db, "grace": 0},
    )
    log = MariaDbTriggerLog(settings)
    tables = [m.source for m in settings.tables]
    try:
        assert [i.table for i in log.install(tables)] == tables
        stack("register", name, f"database.include.list={shop.database}",
              f"table.include.list={','.join(tables)}", "--source", "mariadb")  # fmt: skip
        run_mariadb_workload(shop, WorkloadConfig(rate=0, duration=None, count=400, seed=7))
        with connect(shop) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT source_table, key_text, op, changed_s FROM {log_db}.changes")
            logged = [(str(a), str(b), str(c), int(d)) for a, b, c, d in cur.fetchall()]
        deletes = sum(1 for e in logged if e[2] == "d")
        assert len(logged) >= 400 and deletes > 0
        wait_for(
            lambda: high_marks(services.kafka_bootstrap, topics) >= len(logged) + deletes,
            f"the connector to publish {len(logged) + deletes} messages", timeout=120,
        )  # fmt: skip
        published = kafka_identities(read_topics(services.kafka_bootstrap, topics), settings)
        assert Counter(published) == Counter(logged), "the log and the connector disagree"
        run_service(settings, until_idle=1)
        newest = max(e[3] for e in logged)
        wait_for(lambda: log.closed_until(0).timestamp() > newest, "the clock", timeout=10)
        run = sweep_once(settings, replay=False)
        assert (run.status, run.missed, run.in_flight) == ("ok", 0, 0), run.summary()
        assert run.applied == len(logged), run.summary()
    finally:
        stack("delete", name, "--source", "mariadb")
        log.uninstall(drop_log=True)
        with connect(shop) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {shop.database}")
            cur.execute(f"DROP DATABASE IF EXISTS {log_db}")
            conn.commit()
