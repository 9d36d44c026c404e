"""The applier's promises against the real target database (P2, P3, P5, P7).

Events are built directly here; `test_service.py` drives the same paths through Kafka.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from cdc_recon.apply.applier import Applier
from cdc_recon.apply.status import require_control_tables
from cdc_recon.batch import Decoded, Failure, FailureReason, Message
from cdc_recon.codecs.messages import decode_batch
from cdc_recon.config import Settings, load_settings
from cdc_recon.control_schema import init_control_schema
from cdc_recon.events import ChangeEvent, Op, SourcePosition
from cdc_recon.exceptions import ConfigError
from tests.conftest import Database

pytestmark = pytest.mark.integration

SOURCE = "public.customers"


@pytest.fixture
def setup(target_db: Database) -> Iterator[tuple[Applier, Database]]:
    with target_db.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {target_db.table('customers')} (id int PRIMARY KEY, "
                "name varchar(20) NOT NULL, notes text, payload jsonb, tags text[], "
                "score numeric(10,2))"
            )
        )
    settings = _settings(target_db)
    init_control_schema(target_db.engine, settings.control_schema)
    applier = Applier(target_db.engine, settings)
    applier.prepare()
    yield applier, target_db
    applier.close()


def _settings(db: Database, **mapping: Any) -> Settings:
    table = {"source": SOURCE, "target": f"{db.schema}.customers", "key": ["id"], **mapping}
    return load_settings(target_url=db.url, control_schema=db.schema, tables=[table])


_offsets = iter(range(10**9))


def event(key: int, lsn: int, op: Op = Op.UPDATE, tx: int | None = None, **row: Any) -> Decoded:
    after = None if op is Op.DELETE else {"id": key, "name": f"n{key}", **row}
    change = ChangeEvent(
        table=SOURCE,
        op=op,
        key={"id": key},
        after=after,
        position=SourcePosition((lsn,)),
        source_ts_ms=1_700_000_000_000 + lsn,
        tx=str(tx if tx is not None else lsn),
    )
    message = Message("t", 0, next(_offsets), b"k", b"v")
    return Decoded(message, change)


def rows(db: Database) -> dict[int, tuple[Any, ...]]:
    with db.engine.connect() as conn:
        result = conn.execute(sa.text(f"SELECT * FROM {db.table('customers')} ORDER BY id"))
        return {r[0]: tuple(r) for r in result}


def ledger_count(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {db.table('ledger')}")).scalar_one())


def test_a_change_delivered_twice_is_applied_once(setup: tuple[Applier, Database]) -> None:
    applier, db = setup
    batch = [event(1, 10, Op.CREATE, name="first"), event(2, 11, Op.CREATE)]
    first = applier.apply(batch, {("t", 0): 2}, "g")
    again = applier.apply(batch, {("t", 0): 2}, "g")
    assert (first.applied, first.duplicates) == (2, 0)
    assert (again.applied, again.duplicates) == (0, 2)
    assert ledger_count(db) == 2
    assert rows(db)[1][1] == "first"
    with db.engine.connect() as conn:
        times = conn.execute(
            sa.text(f"SELECT change_id, source_ts FROM {db.table('ledger')} ORDER BY 1")
        ).all()
    base = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)  # 1_700_000_000 s
    assert [t for _, t in times] == [base + dt.timedelta(milliseconds=ms) for ms in (10, 11)]


def test_older_events_after_newer_change_nothing(setup: tuple[Applier, Database]) -> None:
    applier, db = setup
    applier.apply([event(1, 50, name="newest")], {}, "g")
    result = applier.apply([event(1, 40, name="older"), event(1, 45, name="old")], {}, "g")
    assert result.superseded == 2 and result.applied == 0
    assert rows(db)[1][1] == "newest"


def test_positions_compare_as_numbers(setup: tuple[Applier, Database]) -> None:
    applier, db = setup
    applier.apply([event(1, 9, name="nine")], {}, "g")
    applier.apply([event(1, 10, name="ten")], {}, "g")  # "10" < "9" as strings
    assert rows(db)[1][1] == "ten"


def test_delete_then_late_update_stays_deleted(setup: tuple[Applier, Database]) -> None:
    applier, db = setup
    applier.apply([event(1, 10, Op.CREATE), event(1, 20, Op.DELETE)], {}, "g")
    late = applier.apply([event(1, 15, name="late")], {}, "g")
    assert late.superseded == 1
    assert 1 not in rows(db)
    applier.apply([event(1, 30, Op.CREATE, name="reborn")], {}, "g")
    assert rows(db)[1][1] == "reborn"


def test_changes_to_one_key_in_a_batch_collapse(setup: tuple[Applier, Database]) -> None:
    applier, db = setup
    batch = [
        event(1, 10, Op.CREATE, name="a", notes="kept"),
        event(1, 12, name="c", tx=12),
        event(1, 11, name="b", tx=11),
        event(2, 13, Op.CREATE),
        event(2, 14, Op.DELETE),
    ]
    result = applier.apply(batch, {}, "g")
    # (1, 11) arrives after (1, 12): it is superseded, and leaves no trace in the row.
    assert (result.applied, result.superseded) == (4, 1)
    # Columns a later change does not carry keep what the earlier change gave them.
    assert rows(db) == {1: (1, "c", "kept", None, None, None)}


def test_unavailable_toast_column_keeps_the_stored_value(
    setup: tuple[Applier, Database],
) -> None:
    applier, db = setup
    applier.apply([event(1, 10, Op.CREATE, notes="large toasted text")], {}, "g")
    toast = event(1, 11, name="renamed")
    assert toast.event is not None and toast.event.after is not None
    # The codec drops placeholder columns from `after` and lists them as unavailable.
    toast = Decoded(toast.message, toast.event.replace(unavailable=frozenset({"notes"})))
    applier.apply([toast], {}, "g")
    assert rows(db)[1][1:3] == ("renamed", "large toasted text")


def test_types_reach_their_columns(setup: tuple[Applier, Database]) -> None:
    from decimal import Decimal

    applier, db = setup
    payload = {"a": [1, "tab\there"], "b": "new\nline \\ back"}
    applier.apply(
        [
            event(
                1, 1, Op.CREATE, payload=payload, tags=["x", 'q"uote', None], score=Decimal("12.50")
            )
        ],
        {},
        "g",
    )
    row = rows(db)[1]
    assert row[3] == payload and row[4] == ["x", 'q"uote', None] and row[5] == Decimal("12.50")


def test_unmapped_table_invalid_value_and_rejected_row_are_quarantined(
    setup: tuple[Applier, Database],
) -> None:
    applier, db = setup
    with db.engine.begin() as conn:  # a rule only the target knows
        conn.execute(sa.text(f"ALTER TABLE {db.table('customers')} ADD CHECK (score >= 0)"))
    good = event(1, 10, Op.CREATE)
    too_long = event(2, 11, Op.CREATE, name="x" * 50)
    stranger = event(3, 12, Op.CREATE)
    assert stranger.event is not None
    stranger = Decoded(stranger.message, stranger.event.replace(table="public.secrets"))
    undecodable = Failure(Message("t", 0, 999, None, b"\xff"), FailureReason.UNDECODABLE, "bad")
    negative = event(5, 14, Op.CREATE, score=Decimal("-1.00"))
    result = applier.apply(
        [good, too_long, stranger, undecodable, event(4, 13, Op.CREATE), negative], {}, "g"
    )
    assert sorted(rows(db)) == [1, 4]
    assert sorted(f.reason for f in result.failures) == [
        "invalid",
        "rejected",
        "undecodable",
        "unmapped",
    ]
    with db.engine.connect() as conn:
        stored = conn.execute(
            sa.text(f"SELECT reason, kafka_offset, raw_value, detail FROM {db.table('failures')}")
        ).all()
    assert {(r, o) for r, o, _, _ in stored} == {
        ("invalid", too_long.message.offset),
        ("rejected", negative.message.offset),
        ("unmapped", stranger.message.offset),
        ("undecodable", 999),
    }
    details = {r: d for r, _, _, d in stored}
    assert "is longer than 20 characters" in details["invalid"]
    assert "check constraint" in details["rejected"] and "23514" in details["rejected"]
    assert any(bytes(raw) == b"\xff" for _, _, raw, _ in stored)
    assert ledger_count(db) == 2
    with db.engine.connect() as conn:
        tables = conn.execute(
            sa.text("SELECT count(*) FROM pg_tables WHERE tablename = 'secrets'")
        ).scalar_one()
    assert tables == 0


def test_a_source_time_past_year_9999_is_quarantined() -> None:
    """The ledger's source time comes from the event: one no date can hold is refused
    with its value named, before anything reaches the target."""
    value = (
        b'{"op":"c","after":{"id":2},"source":{"connector":"postgresql","ts_ms":'
        b'400000000000000,"schema":"public","table":"customers","txId":5,"lsn":11}}'
    )
    [failure] = decode_batch([Message("t", 0, 7, b'{"id":2}', value)], "debezium", None)
    assert isinstance(failure, Failure) and failure.reason == "undecodable"
    assert "source time 400000000000000 ms is outside years 1-9999" in failure.detail


def test_offsets_are_stored_with_the_batch(setup: tuple[Applier, Database]) -> None:
    applier, _ = setup
    applier.apply([event(1, 1, Op.CREATE)], {("t", 0): 7, ("t", 1): 3}, "g")
    applier.apply([], {("t", 0): 9}, "g")
    assert applier.stored_offsets("g", [("t", 0), ("t", 1), ("t", 2)]) == {
        ("t", 0): 9,
        ("t", 1): 3,
    }
    assert applier.stored_offsets("other", [("t", 0)]) == {}


def test_soft_delete_sets_the_flag(target_db: Database) -> None:
    with target_db.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {target_db.table('customers')} (id int PRIMARY KEY, name text, "
                "_deleted boolean NOT NULL DEFAULT false)"
            )
        )
    settings = _settings(target_db, delete_mode="soft")
    init_control_schema(target_db.engine, settings.control_schema)
    applier = Applier(target_db.engine, settings)
    applier.prepare()
    applier.apply([event(1, 1, Op.CREATE), event(2, 2, Op.CREATE)], {}, "g")
    applier.apply([event(1, 3, Op.DELETE)], {}, "g")
    applier.close()
    assert rows(target_db) == {1: (1, "n1", True), 2: (2, "n2", False)}


def test_a_row_created_without_its_toast_columns_is_incomplete_until_a_full_image(
    setup: tuple[Applier, Database],
) -> None:
    applier, db = setup

    def incomplete() -> bool:
        with db.engine.connect() as conn:
            return bool(
                conn.execute(sa.text(f"SELECT incomplete FROM {db.table('key_state')}")).scalar()
            )

    partial = event(1, 10, name="no notes")  # the insert was lost; notes is unchanged TOAST
    assert partial.event is not None
    partial = Decoded(partial.message, partial.event.replace(unavailable=frozenset({"notes"})))
    applier.apply([partial], {}, "g")
    assert incomplete(), "the sweeper must not count the lost insert as superseded"
    applier.apply([event(1, 20, name="full", notes="all columns")], {}, "g")
    assert not incomplete()


def test_control_tables_of_an_earlier_version_ask_for_init(target_db: Database) -> None:
    """Tables `init` made before the ledger index, previous_position and a plain
    source_ts existed: the service refuses to start with the fix in one line, and
    `init` upgrades them, keeping the ledger's rows and their source times."""
    schema = target_db.schema
    init_control_schema(target_db.engine, schema)
    require_control_tables(target_db.engine, schema)  # current: no complaint
    with target_db.engine.begin() as conn:
        # The ledger of those versions: one table, a primary key, a generated source_ts.
        conn.execute(sa.text(f'DROP TABLE "{schema}".ledger'))
        conn.execute(
            sa.text(
                f'CREATE TABLE "{schema}".ledger (change_id text PRIMARY KEY, '
                "source_table text NOT NULL, target_table text NOT NULL, key_text text NOT "
                "NULL, op text NOT NULL, position bigint[] NOT NULL, tx text, source_ts_ms "
                "bigint NOT NULL, topic text, kafka_partition int, kafka_offset bigint, "
                "outcome text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), "
                "source_ts timestamptz GENERATED ALWAYS AS "
                "(to_timestamp(source_ts_ms / 1000.0)) STORED)"
            )
        )
        conn.execute(sa.text(f'ALTER TABLE "{schema}".key_state DROP COLUMN previous_position'))
        conn.execute(
            sa.text(
                f'INSERT INTO "{schema}".ledger (change_id, source_table, target_table, '
                "key_text, op, position, source_ts_ms, outcome) VALUES ('t:1:9', 't', 't', "
                "'1', 'u', '{9}', 1790000000123, 'applied')"
            )
        )
    with pytest.raises(ConfigError, match="predate this version") as info:
        require_control_tables(target_db.engine, schema)
    lacking_all = (
        "ledger_change_id",
        "previous_position",
        "not generated) column source_ts",
        "ledger partitions by source time",
    )
    for lacking in lacking_all:
        assert lacking in str(info.value)
    assert "cdc-recon init" in str(info.value)
    init_control_schema(target_db.engine, schema)
    require_control_tables(target_db.engine, schema)
    with target_db.engine.connect() as conn:
        kept = conn.execute(
            sa.text(f'SELECT source_ts = to_timestamp(1790000000.123) FROM "{schema}".ledger')
        ).scalar()
    assert kept is True, "init keeps the source times a generated column computed"
    with target_db.engine.connect() as conn:
        pkey = conn.execute(
            sa.text("SELECT to_regclass(:name)"), {"name": f'"{schema}".ledger_pkey'}
        ).scalar()
    assert pkey is None, "init replaces the old primary key with the transaction-first index"


def test_a_rejected_row_leaves_its_key_as_it_was(setup: tuple[Applier, Database]) -> None:
    """Row by row (`apply.isolate`), a rejected row's key_state goes back to its state before
    the batch: a later change older than the rejected one still applies (P3 stays exact),
    and a new key that was rejected has no state at all."""
    applier, db = setup
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {db.table('customers')} ADD CHECK (score >= 0)"))
    applier.apply([event(1, 10, Op.CREATE, score=Decimal(1))], {}, "g")
    rejected = [event(1, 30, score=Decimal(-1)), event(2, 31, Op.CREATE, score=Decimal(-2))]
    result = applier.apply([*rejected, event(3, 32, Op.CREATE)], {}, "g")
    assert [f.message.offset for f in result.failures] == [r.message.offset for r in rejected]
    assert (result.applied, result.superseded, result.duplicates) == (1, 0, 0)
    with db.engine.connect() as conn:
        state = dict(
            conn.execute(sa.text(f"SELECT key_text, position FROM {db.table('key_state')}")).all()
        )
    assert state == {'["1"]': [10], '["3"]': [32]}
    applier.apply([event(1, 20, score=Decimal(2))], {}, "g")  # older than 30, newer than 10
    assert rows(db)[1][-1] == Decimal(2)
