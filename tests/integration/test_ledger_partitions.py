"""The ledger's partitions by source time, against the real target (P1, P2, P8).

Partitions are made ahead (`init`, `maintain_ledger`) and on demand (a change of any
source time applies); a retention run drops an expired, swept partition and keeps one
the sweeper has not passed; a change delivered again, replayed from Kafka or re-read
from the source is never recorded twice; `init` converts an unpartitioned ledger,
keeping its rows; status shows the partitions and the next drop.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from cdc_recon.apply.applier import Applier
from cdc_recon.apply.ledger import maintain_ledger
from cdc_recon.apply.status import read_target_status, require_control_tables
from cdc_recon.batch import Decoded, Message
from cdc_recon.config import Settings, load_settings
from cdc_recon.config.settings import LedgerSettings
from cdc_recon.control_schema import init_control_schema
from cdc_recon.events import ChangeEvent, Op, SourcePosition
from cdc_recon.exceptions import ConfigError
from cdc_recon.monitor.figures import control_figures
from cdc_recon.replay import replay_window
from tests.conftest import Database, Services, wait_for
from tests.integration.test_applier_ledger_ways import CountingApplier
from tests.integration.test_replay import Pipeline, Source, pipeline  # noqa: F401

pytestmark = pytest.mark.integration

SOURCE = "public.customers"
NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
_offsets = iter(range(10**9))


def _settings(db: Database, **ledger: Any) -> Settings:
    table = {"source": SOURCE, "target": f"{db.schema}.customers", "key": ["id"]}
    return load_settings(target_url=db.url, control_schema=db.schema, tables=[table], ledger=ledger)


@pytest.fixture
def target(target_db: Database) -> Database:
    with target_db.engine.begin() as conn:
        conn.execute(
            sa.text(f"CREATE TABLE {target_db.table('customers')} (id int PRIMARY KEY, name text)")
        )
    return target_db


@pytest.fixture
def applier(target: Database) -> Iterator[CountingApplier]:
    settings = _settings(target)
    init_control_schema(target.engine, target.schema, settings.ledger)
    applier = CountingApplier(target.engine, settings)
    applier.prepare()
    yield applier
    applier.close()


def event(key: int, lsn: int, at: dt.datetime | int, name: str = "n") -> Decoded:
    """An update of `key` at source position `lsn` and source time `at` (or its ms)."""
    millis = at if isinstance(at, int) else int(at.timestamp() * 1000)
    change = ChangeEvent(
        table=SOURCE,
        op=Op.UPDATE,
        key={"id": key},
        after={"id": key, "name": name},
        position=SourcePosition((lsn,)),
        source_ts_ms=millis,
        tx=str(lsn),
    )
    return Decoded(Message("t", 0, next(_offsets), b"k", b"v"), change)


def partitions(db: Database) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    sql = (
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t)"
    )
    with db.engine.connect() as conn:
        conn.execute(sa.text("SET TIME ZONE 'UTC'"))
        found = conn.execute(sa.text(sql), {"t": db.table("ledger")}).all()
    out = {}
    for name, bound in found:
        low, high = bound.split("'")[1], bound.split("'")[3]
        out[name] = (dt.datetime.fromisoformat(low), dt.datetime.fromisoformat(high))
    return out


def scalar(db: Database, sql: str, **params: Any) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(sa.text(sql.format(s=f'"{db.schema}"')), params).scalar()


def midnight(moment: dt.datetime) -> dt.datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


# -- created ahead, and on demand ------------------------------------------------------


def test_init_and_maintenance_create_partitions_ahead(target: Database) -> None:
    settings = _settings(target, ahead=2)
    init_control_schema(target.engine, target.schema, settings.ledger)
    today = midnight(NOW)
    assert sorted(p[0] for p in partitions(target).values()) == [today + i * DAY for i in range(3)]

    later = NOW + 10 * DAY  # the service's timer, ten days on
    done = maintain_ledger(target.engine, settings, later)
    assert done.created == [f"ledger_p{midnight(later) + i * DAY:%Y%m%d}" for i in range(3)]
    assert done.dropped == [], "nothing swept: nothing dropped"
    hourly = maintain_ledger(target.engine, _settings(target, partition="hour", ahead=1), later)
    assert hourly.created == [], "hours already covered by days: only gaps are made"


@pytest.mark.parametrize(
    "at",
    [
        dt.datetime(1971, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        dt.datetime(2400, 1, 1, 0, 0, 0, 999000, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC),
    ],
)
def test_a_change_far_in_the_past_or_future_applies_and_once(
    applier: CountingApplier, target: Database, at: dt.datetime
) -> None:
    batch = [event(1, 10, at), event(2, 11, NOW)]
    first = applier.apply(batch, {}, "g")
    assert (first.applied, first.duplicates, first.failures) == (2, 0, [])
    assert any(low <= at < high for low, high in partitions(target).values())

    again = applier.apply(batch, {}, "g")  # the quick path meets the partitions' indexes
    assert (again.applied, again.duplicates, applier.careful_writes) == (0, 2, 1)
    assert scalar(target, "SELECT count(*) FROM {s}.ledger") == 2
    stored = scalar(target, "SELECT source_ts FROM {s}.ledger WHERE key_text = '[\"1\"]'")
    assert stored == at, "the same instant on every path (the index holds it)"


def test_a_redelivery_written_the_careful_way_is_a_duplicate(
    applier: CountingApplier, target: Database
) -> None:
    """A batch mixing a redelivered old change with new ones goes the careful way: its
    INSERT ... ON CONFLICT on (tx, change id, source_ts) skips the old one."""
    old = event(1, 10, NOW - 30 * DAY)
    applier.apply([old], {}, "g")
    mixed = applier.apply([old, event(2, 20, NOW - 40 * DAY), event(3, 21, NOW)], {}, "g")
    assert (mixed.applied, mixed.duplicates, applier.careful_writes) == (2, 1, 1)
    assert scalar(target, "SELECT count(*) FROM {s}.ledger") == 3


# -- retention ---------------------------------------------------------------------------


def _aged_ledger(applier: Applier, target: Database) -> None:
    """Changes 20 and 10 days old and of today; the sweeper has passed 15 days ago."""
    batch = [event(1, 1, NOW - 20 * DAY), event(2, 2, NOW - 10 * DAY), event(3, 3, NOW)]
    assert applier.apply(batch, {}, "g").applied == 3
    with target.engine.begin() as conn:
        conn.execute(
            sa.text(
                f'INSERT INTO "{target.schema}".sweeper_watermark (pipeline, adapter, '
                "swept_until) VALUES ('g', 'pg_trigger', :at)"
            ),
            {"at": NOW - 15 * DAY},
        )


def test_retention_drops_a_swept_partition_and_keeps_an_unswept_one(
    applier: CountingApplier, target: Database
) -> None:
    _aged_ledger(applier, target)
    done = maintain_ledger(target.engine, _settings(target), NOW)
    assert done.dropped == [f"ledger_p{NOW - 20 * DAY:%Y%m%d}"], done
    kept = scalar(target, "SELECT array_agg(key_text ORDER BY key_text) FROM {s}.ledger")
    assert kept == ['["2"]', '["3"]'], "10 days old but not swept: kept (P1)"
    assert f"ledger_p{NOW - 10 * DAY:%Y%m%d}" in partitions(target)
    assert scalar(target, "SELECT to_regclass(:t)", t=f"{target.schema}.{done.dropped[0]}") is None

    with target.engine.begin() as conn:
        conn.execute(sa.text(f'DELETE FROM "{target.schema}".sweeper_watermark'))
    unswept = maintain_ledger(target.engine, _settings(target, retention=86400), NOW)
    assert unswept.dropped == [], "no watermark: nothing is dropped"
    by_age = maintain_ledger(target.engine, _settings(target, drop_unswept=True), NOW)
    assert by_age.dropped == [f"ledger_p{NOW - 10 * DAY:%Y%m%d}"]


def test_a_drop_waiting_for_a_reader_finishes_on_the_next_run(
    applier: CountingApplier, target: Database
) -> None:
    """D2 waits for transactions that may still see the partition; past lock_timeout it
    is left detach-pending, and the next run FINALIZEs and drops it."""
    _aged_ledger(applier, target)
    settings = _settings(target, lock_timeout=0.3)
    with target.engine.connect() as reader:
        reader.execute(sa.text(f'SELECT count(*) FROM "{target.schema}".ledger'))  # holds on
        done = maintain_ledger(target.engine, settings, NOW)
        assert done.waiting and done.dropped == [], done
        assert scalar(
            target,
            "SELECT bool_or(inhdetachpending) FROM pg_inherits WHERE inhparent = to_regclass(:t)",
            t=target.table("ledger"),
        )
        reader.rollback()
    again = maintain_ledger(target.engine, settings, NOW)
    assert again.dropped == [f"ledger_p{NOW - 20 * DAY:%Y%m%d}"], again
    assert applier.apply([event(4, 4, NOW)], {}, "g").applied == 1


def test_a_table_left_by_a_drop_cut_short_is_dropped(
    applier: CountingApplier, target: Database
) -> None:
    """A crash between D2 and D3 leaves a marked table outside the ledger; one detached
    by hand (no mark) is left alone."""
    _aged_ledger(applier, target)
    s, old, kept = f'"{target.schema}"', f"ledger_p{NOW - 20 * DAY:%Y%m%d}", "ledger_p20000101"
    applier.apply([event(9, 9, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))], {}, "g")
    with target.engine.begin() as conn:
        conn.execute(sa.text(f"COMMENT ON TABLE {s}.{old} IS 'cdc_recon: dropping'"))
        conn.execute(sa.text(f"ALTER TABLE {s}.ledger DETACH PARTITION {s}.{old}"))
        conn.execute(sa.text(f"ALTER TABLE {s}.ledger DETACH PARTITION {s}.{kept}"))
    done = maintain_ledger(target.engine, _settings(target), NOW)
    assert done.dropped == [old]
    assert scalar(target, "SELECT count(*) FROM {s}.ledger_p20000101") == 1


# -- the same change three ways: never twice ------------------------------------------------


def test_redelivery_kafka_replay_and_source_re_read_never_record_a_change_twice(
    pipeline: Pipeline,  # noqa: F811
) -> None:
    src = Source(pipeline)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    writes = [src.write("c", k, f"n{k}") for k in range(1, 4)] + [src.write("u", 2, "two")]
    offsets = pipeline.send([w.sent for w in writes])
    end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    pipeline.apply_offsets(offsets)
    ids = {w.missed.change_id for w in writes}
    assert pipeline.ledger_ids() == ids

    pipeline.apply_offsets(offsets)  # 1. redelivery: the same messages again
    replayed = replay_window(pipeline.settings, start=start, end=end)  # 2. from Kafka
    assert (replayed.read, replayed.applied, replayed.duplicates) == (4, 0, 4)
    assert pipeline.count("ledger") == 4

    # 3. re-read from the source: a new change (the re-reading transaction's id) that
    # supersedes nothing twice; then the original messages, once more, are duplicates
    reread = replay_window(pipeline.settings, start=start, end=end, source="source-db")
    assert reread.applied == 3 and reread.duplicates == 0
    with pipeline.target.engine.connect() as conn:
        counted = conn.execute(
            sa.text(
                f'SELECT change_id, count(*) FROM "{pipeline.target.schema}".ledger '
                "GROUP BY 1 HAVING count(*) > 1"
            )
        ).all()
    assert counted == [], "no change id twice, across partitions"
    assert ids < pipeline.ledger_ids() and pipeline.count("ledger") == 7
    again = replay_window(pipeline.settings, start=start, end=end)
    assert (again.applied, again.duplicates) == (0, 4)
    assert pipeline.target_rows() == pipeline.source_rows()


# -- init converts an unpartitioned ledger -------------------------------------------------

OLD_LEDGER = (
    "(change_id text NOT NULL, source_table text NOT NULL, target_table text NOT NULL, "
    "key_text text NOT NULL, op text NOT NULL, position bigint[] NOT NULL, tx text, "
    "source_ts_ms bigint NOT NULL, source_ts timestamptz NOT NULL, topic text, "
    "kafka_partition int, kafka_offset bigint, outcome text NOT NULL, "
    "applied_at timestamptz NOT NULL DEFAULT now())"
)


def _old_ledger(db: Database, rows: int, extra: str = "") -> None:
    """The control tables of the previous version: its ledger is one table, `rows` rows
    spread over the last 10 days."""
    s = f'"{db.schema}"'
    start_ms = int((NOW - 10 * DAY).timestamp() * 1000)
    init_control_schema(db.engine, db.schema)
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {s}.ledger"))
        conn.execute(sa.text(f"CREATE TABLE {s}.ledger {OLD_LEDGER[:-1]}{extra})"))
        conn.execute(
            sa.text(
                f"CREATE UNIQUE INDEX ledger_change_id ON {s}.ledger "
                "(split_part(change_id, ':', -1), change_id)"
            )
        )
        conn.execute(sa.text(f"CREATE INDEX ledger_source_ts ON {s}.ledger USING brin (source_ts)"))
        conn.execute(
            sa.text(
                f"INSERT INTO {s}.ledger (change_id, source_table, target_table, key_text, op, "
                "position, tx, source_ts_ms, source_ts, outcome) SELECT "
                f"'{SOURCE}:[\"' || i || '\"]:' || i, '{SOURCE}', '{db.schema}.customers', "
                "'[\"' || i || '\"]', 'u', ARRAY[i], i::text, :start + i * :step, "
                "to_timestamp((:start + i * :step) / 1000) + mod(:start + i * :step, 1000) "
                "* interval '1 ms', 'applied' FROM generate_series(1, :n) i"
            ),
            {"start": start_ms, "step": 10 * 86_400_000 // rows, "n": rows},
        )


def test_init_converts_an_unpartitioned_ledger_keeping_its_rows(target: Database) -> None:
    _old_ledger(target, 1000)
    with pytest.raises(ConfigError, match="ledger partitions by source time"):
        require_control_tables(target.engine, target.schema)
    converted: list[Any] = []
    init_control_schema(target.engine, target.schema, converted=converted)
    require_control_tables(target.engine, target.schema)
    (done,) = converted
    assert done.rows == 1000 and done.partition == f"ledger_p{NOW - 10 * DAY:%Y%m%d}"
    assert scalar(target, "SELECT count(*) FROM {s}.ledger") == 1000
    assert done.partition in partitions(target) and len(partitions(target)) > 1

    settings = _settings(target)
    applier = CountingApplier(target.engine, settings)
    applier.prepare()
    try:  # a kept row's change arriving again is known, by the kept partition's index
        at = int((NOW - 10 * DAY).timestamp() * 1000) + 7 * (10 * 86_400_000 // 1000)
        result = applier.apply([event(7, 7, at)], {}, "g")
        assert (result.duplicates, applier.careful_writes) == (1, 1)
    finally:
        applier.close()
    assert init_control_schema(target.engine, target.schema, converted=converted)
    assert len(converted) == 1, "a second init has nothing to convert"


def test_init_refuses_a_ledger_it_does_not_know_in_one_line(target: Database) -> None:
    _old_ledger(target, 10, extra=", mine text")
    with pytest.raises(ConfigError) as info:
        init_control_schema(target.engine, target.schema)
    message = str(info.value)
    assert "\n" not in message and "mine" in message and "RENAME TO ledger_old" in message
    assert scalar(target, "SELECT count(*) FROM {s}.ledger") == 10, "left as it was"


# -- status and /metrics ---------------------------------------------------------------


def test_status_after_a_simulated_week_shows_the_retention_at_work(
    applier: CountingApplier,
    target: Database,
    tmp_path: Path,
    services: Services,
    topic_factory: Callable[..., str],
) -> None:
    _aged_ledger(applier, target)
    settings = _settings(target)
    maintain_ledger(target.engine, settings, NOW)
    shown = read_target_status(target.engine, target.schema, "g", settings).partitions
    assert shown.oldest_kept == midnight(NOW - 10 * DAY)
    assert (
        shown.next_drop is not None and shown.next_drop.name == f"ledger_p{NOW - 10 * DAY:%Y%m%d}"
    )
    assert shown.next_drop_at is None, "waits for the sweeper's watermark"
    figures = control_figures(target.engine, target.schema, "g", settings)
    assert figures.ledger.as_dict() == shown.as_dict()

    with target.engine.begin() as conn:
        conn.execute(
            sa.text(f'UPDATE "{target.schema}".sweeper_watermark SET swept_until = :at'),
            {"at": NOW},
        )
    config = tmp_path / "cdc-recon.yml"
    data = settings.masked()
    data.update(
        target_url=target.url, kafka_bootstrap=services.kafka_bootstrap, topics=[topic_factory()]
    )
    config.write_text(yaml.safe_dump(data))
    command = [sys.executable, "-m", "cdc_recon.cli", "-c", str(config), "status"]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)["ledger_partitions"]
    expected = midnight(NOW - 9 * DAY) + 7 * DAY  # its end, plus the retention
    assert status["next_drop_at"] == expected.isoformat()
    assert status["oldest_kept"] == midnight(NOW - 10 * DAY).isoformat()
    table = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert "ledger partitions" in table.stdout and "next drop" in table.stdout, table.stdout


def test_maintenance_runs_beside_the_service_thread(target: Database) -> None:
    """`run.LedgerMaintainer` makes the partitions ahead at start."""
    from cdc_recon.run import LedgerMaintainer

    settings = _settings(target, ahead=5)
    init_control_schema(target.engine, target.schema, LedgerSettings(ahead=0))
    assert len(partitions(target)) == 1
    thread = LedgerMaintainer(settings, target.engine)
    thread.start()
    try:
        wait_for(lambda: len(partitions(target)) == 6, "the maintainer's first run", 30)
    finally:
        thread.stop()
    assert not thread.is_alive() and isinstance(thread, threading.Thread)
