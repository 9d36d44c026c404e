"""Replay's pure parts: offset ranges, re-read events, change matching, the dry-run tally."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_recon.apply.mapping import MappedChange
from cdc_recon.apply.preview import PreviewState, tally
from cdc_recon.batch import ApplyResult, Decoded, Failure, Message
from cdc_recon.config import TableMapping, load_settings
from cdc_recon.events import ChangeEvent, Op, SourcePosition, key_text
from cdc_recon.exceptions import ConfigError, DatabaseUnavailable, SourceBusy, UsageError
from cdc_recon.kafka.consumer import Watermarks
from cdc_recon.kafka.window import OffsetRange, runs, window_range
from cdc_recon.replay.changes import (
    MissedChange,
    ReplaySummary,
    chunks,
    event_matches,
    normal_key_text,
    reread_events,
)
from cdc_recon.replay.missed import _reread_keys
from cdc_recon.replay.sinks import select_tables
from cdc_recon.source_db.rows import (
    KeysRead,
    SourceRead,
    key_object,
    key_objects,
    rows_after,
    rows_by_key,
)

ORDERS = TableMapping(source="shop.orders", target="public.orders", key=("region", "id"))


# -- Kafka offsets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "marks", "expected"),
    [
        (5, 9, Watermarks(0, 20), (5, 9)),
        (5, -1, Watermarks(0, 20), (5, 20)),  # nothing at or after the end: up to the high mark
        (-1, -1, Watermarks(0, 20), (20, 20)),  # nothing in or after the window
        (2, 9, Watermarks(4, 20), (4, 9)),  # records deleted below the low watermark
        (5, 30, Watermarks(0, 20), (5, 20)),
        (0, 0, Watermarks(0, 0), (0, 0)),  # empty partition
    ],
)
def test_window_range(start: int, end: int, marks: Watermarks, expected: tuple[int, int]) -> None:
    found = window_range(start, end, marks)
    assert (found.start, found.end) == expected


def test_offset_range_rejects_backwards_ranges() -> None:
    with pytest.raises(ValueError):
        OffsetRange(5, 4)
    assert OffsetRange(3, 3).size == 0


def test_runs_group_nearby_offsets() -> None:
    assert runs([5, 1, 3, 5000, 5001, 9000], nearby=1000) == [[1, 3, 5], [5000, 5001], [9000]]
    assert runs([]) == []


@given(
    st.sets(st.integers(min_value=0, max_value=10**6)), st.integers(min_value=1, max_value=10**4)
)
def test_runs_cover_every_offset_once_in_order(offsets: set[int], nearby: int) -> None:
    grouped = runs(offsets, nearby)
    flat = [o for group in grouped for o in group]
    assert flat == sorted(offsets)
    for before, after in zip(grouped, grouped[1:], strict=False):
        assert after[0] - before[-1] > nearby


# -- keys --------------------------------------------------------------------------------


def test_key_objects_name_the_key_columns() -> None:
    assert key_object('["eu","7"]', ORDERS.key) == {"region": "eu", "id": "7"}
    assert orjson.loads(key_objects(['["eu","7"]', '["us","8"]'], ORDERS.key)) == [
        {"region": "eu", "id": "7"},
        {"region": "us", "id": "8"},
    ]


@pytest.mark.parametrize("bad", ['["eu"]', '{"id": "7"}', '["eu", 7]', "not json", '["a","b","c"]'])
def test_malformed_key_texts_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        key_object(bad, ORDERS.key)


@given(st.lists(st.text(), min_size=1, max_size=3))
def test_normal_key_text_is_what_the_events_module_writes(values: list[str]) -> None:
    spaced = orjson.dumps(values, option=orjson.OPT_INDENT_2).decode()
    assert normal_key_text(spaced) == key_text(values)


def test_reread_sql_quotes_configured_names_and_takes_values_as_parameters() -> None:
    odd = TableMapping(source='we"ird.ta ble', target="public.t", key=('i"d',))
    sql = rows_by_key(odd)
    assert '"we""ird"."ta ble"' in sql and 't."i""d"::text' in sql
    assert "%(keys)s::jsonb" in sql and sql.endswith("FOR SHARE OF t")
    assert "FOR SHARE" not in rows_by_key(odd, lock=False)
    assert "%(after)s::jsonb" in rows_after(odd, resume=True)
    assert "%(after)s" not in rows_after(odd, resume=False)


# -- re-read events ----------------------------------------------------------------------


def test_reread_rows_and_absent_keys_become_snapshot_reads_and_deletes() -> None:
    read = SourceRead(
        table="shop.orders",
        lsn=123456,
        xid=777,
        read_ms=1_700_000_000_000,
        rows={'["eu","1"]': {"region": "eu", "id": 1, "total": 5, "blob": memoryview(b"\x01")}},
        absent=frozenset({'["us","2"]'}),
    )
    events = reread_events(read, ORDERS)
    row, gone = events['["eu","1"]'], events['["us","2"]']
    assert row.event is not None and gone.event is not None
    assert (row.event.op, gone.event.op) == (Op.READ, Op.DELETE)
    assert row.event.position == gone.event.position == SourcePosition((123456,))
    assert row.event.tx == gone.event.tx == "777"
    assert dict(row.event.key) == {"region": "eu", "id": 1}
    assert dict(gone.event.key) == {"region": "us", "id": "2"} and gone.event.after is None
    coordinates = {
        (d.message.topic, d.message.partition, d.message.offset) for d in events.values()
    }
    assert coordinates == {
        ("source-db:shop.orders", 0, 123456),
        ("source-db:shop.orders", 1, 123456),
    }
    assert orjson.loads(row.message.value or b"") == {
        "region": "eu",
        "id": 1,
        "total": 5,
        "blob": "01",
    }
    assert row.message.key == b'["eu","1"]' and gone.message.value is None


def _event(
    table: str,
    key: dict[str, Any],
    tx: str | None,
    ts: int = 5,
    after: dict[str, Any] | None = None,
) -> ChangeEvent:
    image = after if after is not None else {**key, "x": 1}
    return ChangeEvent(table, Op.UPDATE, key, image, SourcePosition((ts,)), ts, tx)


def test_event_matches_compares_table_key_and_transaction() -> None:
    event = _event("shop.orders", {"region": "eu", "id": 7}, "42")
    assert event_matches(event, ORDERS, 'shop.orders:["eu","7"]:42')
    assert not event_matches(event, ORDERS, 'shop.orders:["eu","7"]:43')
    assert not event_matches(event, ORDERS, 'shop.orders:["eu","8"]:42')
    other = TableMapping(source="shop.other", target="public.orders", key=("region", "id"))
    assert not event_matches(event, other, 'shop.orders:["eu","7"]:42')
    plain = _event("orders", {"": 7}, None, ts=99, after={"id": 7, "name": "x"})
    scalar = TableMapping(source="orders", target="public.orders", key=("id",))
    assert event_matches(plain, scalar, 'orders:["7"]:99')
    keyed_by_image = _event("orders", {"other": 1}, "3", after={"id": 7})
    assert event_matches(keyed_by_image, scalar, 'orders:["7"]:3')
    assert not event_matches(_event("orders", {"other": 1}, "3", after={}), scalar, "orders:x:3")


def test_missed_change_coordinates() -> None:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    bare = MissedChange('t:["1"]:5', "t", '["1"]', "5", (10,), at)
    assert bare.coordinates is None
    assert MissedChange("c", "t", '["1"]', "5", None, at, "topic", 0, 9).coordinates == (
        "topic",
        0,
        9,
    )


# -- the dry-run tally -------------------------------------------------------------------


def _mapped(key: int, position: int, change_id: str | None = None) -> MappedChange:
    event = _event("shop.orders", {"id": key}, str(position), ts=position)
    decoded = Decoded(Message("t", 0, position, None, b""), event)
    kt = key_text([key])
    cid = change_id or f"shop.orders:{kt}:{position}"
    return MappedChange(decoded, "public.orders", kt, cid, event.position, Op.UPDATE, ())


def test_tally_classifies_like_the_applier() -> None:
    state = PreviewState(
        positions={("public.orders", key_text([1])): (50,)}, known={'shop.orders:["2"]:20'}
    )
    batch = [
        _mapped(1, 40),  # older than stored: superseded
        _mapped(1, 60),  # applied
        _mapped(2, 20),  # in the ledger: duplicate
        _mapped(3, 9),  # applied
        _mapped(3, 9),  # the same change again in the batch: duplicate
        _mapped(3, 7),  # older than a change before it in the batch: superseded
        _mapped(4, 5),  # applied
    ]
    result = tally(batch, state)
    assert (result.applied, result.superseded, result.duplicates) == (3, 2, 2)
    assert state.positions[("public.orders", key_text([1]))] == (60,)
    assert state.positions[("public.orders", key_text([3]))] == (9,)
    again = tally(batch, state)
    assert (again.applied, again.superseded, again.duplicates) == (0, 0, 7)
    later = tally([_mapped(1, 55), _mapped(3, 8), _mapped(4, 6)], state)
    assert (later.applied, later.superseded) == (1, 2)


def test_summary_adds_batches() -> None:
    summary = ReplaySummary().plus(ApplyResult(applied=2, superseded=1, skipped=1), read=5)
    summary = summary.plus(ApplyResult(duplicates=3), read=3, skipped=2, failed=1)
    assert summary.as_dict() == {
        "read": 8,
        "applied": 2,
        "superseded": 1,
        "duplicates": 3,
        "skipped": 3,
        "failed": 1,
        "dry_run": False,
    }


def test_chunks() -> None:
    assert [list(c) for c in chunks([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(chunks([], 3)) == []


def test_select_tables_names_an_unmapped_table() -> None:
    settings = load_settings(tables=[ORDERS.model_dump()])
    assert select_tables(settings, None) == [ORDERS]
    assert select_tables(settings, ["shop.orders"]) == [ORDERS]
    with pytest.raises(UsageError, match="not a mapped source table: shop.nope"):
        select_tables(settings, ["shop.nope"])


# -- outcomes of re-reads, with fakes for the source and the applier ---------------------


class _Rows:
    def __init__(self, found: KeysRead | Exception) -> None:
        self.found = found

    def read_keys(self, mapping: TableMapping, keys: Sequence[str]) -> KeysRead:
        if isinstance(self.found, Exception):
            raise self.found
        return self.found


class _Sink:
    dry_run = False

    def __init__(self, reject: bytes | None = None) -> None:
        self.reject = reject
        self.applied: list[Decoded | Failure] = []

    def apply(self, items: Sequence[Decoded | Failure]) -> ApplyResult:
        self.applied.extend(items)
        bad = [i for i in items if isinstance(i, Decoded) and i.message.key == self.reject]
        return ApplyResult(failures=[Failure(i.message, "rejected", "too long") for i in bad])


def test_re_read_outcomes_per_key() -> None:
    read = SourceRead(
        "shop.orders",
        lsn=99,
        xid=7,
        read_ms=1,
        rows={'["eu","1"]': {"region": "eu", "id": 1}, '["eu","3"]': {"region": "eu", "id": 3}},
        absent=frozenset({'["eu","2"]'}),
    )
    found = KeysRead([read], unresolved=frozenset({'["eu","4"]'}))
    sink = _Sink(reject=b'["eu","3"]')
    keys = ['["eu","1"]', '["eu","2"]', '["eu","3"]', '["eu","4"]']
    outcomes = _reread_keys(_Rows(found), sink, ORDERS, keys)  # type: ignore[arg-type]
    shown = {key: (o.status, o.detail) for (_, key), o in outcomes.items()}
    assert shown == {
        '["eu","1"]': ("replayed", "re-read from the source at LSN 99 (row)"),
        '["eu","2"]': ("replayed", "re-read from the source at LSN 99 (deleted)"),
        '["eu","3"]': ("failed", "re-read row: rejected: too long"),
        '["eu","4"]': ("pending", "the row changed while being re-read"),
    }
    assert len(sink.applied) == 3


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (SourceBusy("source rows stayed locked"), "pending"),
        (DatabaseUnavailable("gone", service="source"), "pending"),
        (ConfigError("config: tables: relation does not exist"), "failed"),
    ],
)
def test_a_source_that_cannot_be_read_leaves_pending_or_failed(
    error: Exception, status: str
) -> None:
    sink = _Sink()
    outcomes = _reread_keys(_Rows(error), sink, ORDERS, ['["eu","1"]'])  # type: ignore[arg-type]
    assert [o.status for o in outcomes.values()] == [status] and not sink.applied
    assert str(error) in outcomes[("shop.orders", '["eu","1"]')].detail
