"""The Rust COPY text encoders (`cdc_recon_native`) write byte for byte what Python does.

`cdc_recon.apply.encode` and `cdc_recon.pg.sql` are the reference. The applier uses the
Rust encoders when they are installed, so a target row or ledger line must not depend on
whether they are. Each property here encodes one input both ways and compares the
results: `escape`, `copy_line` over every value type a codec produces (and the types the
Rust side hands back to `sql.value_text`), `source_ts_text` from year 1 to 9999 and just past
those bounds, and `encode_winners` / `encode_ledger` over batches shaped like the
applier's. A string with a lone surrogate has no UTF-8 form. For those the Rust side
raises `Unsupported`, and the public encoders fall back to Python with the same result.

`cdc_recon_native` is imported directly, so these tests fail (rather than skip) when the
module is not built.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, TypeVar

import cdc_recon_native
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_recon.apply import encode, native
from cdc_recon.apply.mapping import MappedChange, collapse
from cdc_recon.batch import Decoded, Message
from cdc_recon.events import MISSING, ChangeEvent, Op, SourcePosition, change_id
from cdc_recon.pg import sql

NATIVE = cdc_recon_native.LineEncoder(MISSING, sql.value_text, decimal.Decimal)
Unsupported = cdc_recon_native.Unsupported
T = TypeVar("T")


@contextmanager
def encoders(encoder: Any) -> Iterator[None]:
    """`db.native` set to `encoder` (None: the Python encoders) for the block. This does
    not depend on CDC_RECON_NATIVE. It is not monkeypatch, because hypothesis reruns a
    test body within one function-scoped fixture."""
    saved = native.ENCODER, native.Unsupported
    native.ENCODER, native.Unsupported = encoder, Unsupported
    try:
        yield
    finally:
        native.ENCODER, native.Unsupported = saved


def both(function: Callable[..., T], *args: Any) -> tuple[T, T]:
    """`function(*args)` with the native encoders, then in pure Python."""
    with encoders(NATIVE):
        fast = function(*args)
    with encoders(None):
        slow = function(*args)
    return fast, slow


class Name(str):
    pass


class Count(int):
    pass


class Moment(dt.datetime):
    pass


TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from('\\\t\n\r"{},é€😀'))
SURROGATE = st.characters(categories=["Cs"])
BIG = [2**63 - 1, 2**63, -(2**63) - 1, 10**40]
INTS = st.integers() | st.integers(-(2**65), 2**65) | st.sampled_from(BIG)
FLOATS = st.floats() | st.sampled_from([float("nan"), float("-inf"), -0.0, 1e16, 1e-7, 1e22])
DECIMALS = (
    st.decimals(allow_nan=True, allow_infinity=True)
    | st.integers(-30, 30).map(lambda e: decimal.Decimal(f"-12.50E{e}"))
    | st.sampled_from(["NaN", "sNaN", "-Infinity", "-0", "0E-7", "1E+3"]).map(decimal.Decimal)
)
OFFSETS = st.timedeltas(-dt.timedelta(hours=23, minutes=59), dt.timedelta(hours=23, minutes=59))
ZONES = st.none() | st.just(dt.UTC) | OFFSETS.map(dt.timezone) | st.timezones()
DATETIMES = st.builds(
    lambda moment, whole: moment.replace(microsecond=0) if whole else moment,
    st.datetimes(timezones=ZONES),
    st.booleans(),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
SUBCLASSED = (
    TEXT.map(Name)
    | INTS.map(Count)
    | st.datetimes(timezones=ZONES).map(lambda d: Moment.combine(d.date(), d.timetz()))
)
VALUES = st.one_of(
    st.none(),
    st.just(MISSING),
    TEXT,
    INTS,
    st.booleans(),
    FLOATS,
    DECIMALS,
    DATETIMES,
    st.dates(),
    st.times(timezones=st.none() | OFFSETS.map(dt.timezone)),
    st.uuids(),
    st.binary(max_size=8),
    st.binary(max_size=8).map(bytearray),
    st.dictionaries(TEXT, JSON, max_size=3),
    st.lists(JSON, max_size=3),
    st.timedeltas(),
    SUBCLASSED,
)
# A column: the values it holds and its encoder, as `sql.column_encoders` picks them.
COLUMNS = st.sampled_from(
    [
        (VALUES, None),
        (JSON, sql._json_text),
        (st.lists(VALUES, max_size=4) | VALUES, sql._array_literal),
    ]
)


@given(TEXT)
def test_escape(text: str) -> None:
    assert cdc_recon_native.escape(text) == sql.escape(text)


@given(TEXT, SURROGATE, TEXT)
def test_a_lone_surrogate_is_left_to_python(before: str, surrogate: str, after: str) -> None:
    with pytest.raises(Unsupported):
        cdc_recon_native.escape(before + surrogate + after)
    with pytest.raises(Unsupported):
        NATIVE.copy_line((1, before + surrogate + after), [None, None])


@settings(max_examples=300)
@given(st.lists(COLUMNS.flatmap(lambda c: st.tuples(c[0], st.just(c[1]))), max_size=8))
def test_copy_line(columns: list[tuple[Any, Any]]) -> None:
    values = tuple(value for value, _ in columns)
    encoders = [encoder for _, encoder in columns]
    assert NATIVE.copy_line(values, encoders) == sql.copy_line(values, encoders)


@pytest.mark.parametrize("values, width", [((1, "a"), 1), ((1,), 2), ((), 1)])
def test_a_row_must_match_its_columns(values: tuple[Any, ...], width: int) -> None:
    with pytest.raises(ValueError):
        sql.copy_line(values, [None] * width)
    with pytest.raises(ValueError):
        NATIVE.copy_line(values, [None] * width)


MIN_MS = -62_135_596_800_000  # 0001-01-01 00:00:00.000 UTC
MAX_MS = 253_402_300_799_999  # 9999-12-31 23:59:59.999 UTC


@settings(max_examples=300)
@given(
    st.integers(-(2**63), 2**63 - 1)
    | st.integers(-(10**13), 10**13)
    | st.integers(MIN_MS - 2000, MIN_MS + 2000)
    | st.integers(MAX_MS - 2000, MAX_MS + 2000)
)
def test_source_ts_text(millis: int) -> None:
    assert cdc_recon_native.source_ts_text(millis) == encode.source_ts_text(millis)


@pytest.mark.parametrize("millis", [MIN_MS, MIN_MS - 1, MAX_MS, MAX_MS + 1, -1, 0, 999, -(2**63)])
def test_source_ts_text_at_the_bounds(millis: int) -> None:
    assert cdc_recon_native.source_ts_text(millis) == encode.source_ts_text(millis)


# Table and topic names share a pool: a plain-format topic is often named like its table.
NAMES = st.sampled_from(["s.t", "orders", "a\tb\\c"])
KEYS = st.text(st.sampled_from("ab\\\t\né"), max_size=3)
PARTS = st.integers(0, 2**63 - 1) | st.integers(0, 3)
POSITIONS = (st.tuples(PARTS) | st.tuples(PARTS, PARTS, PARTS)).map(SourcePosition)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[MappedChange], list[Any]]:
    """One target's changes, and its column encoders. Keys, transactions and source
    times come from small pools, so that keys and change ids repeat."""
    columns = [(KEYS, None), *draw(st.lists(COLUMNS, max_size=5))]
    names = [f"c{i}" for i in range(len(columns))]
    keys = draw(st.lists(KEYS, min_size=1, max_size=4))
    tables = draw(st.lists(NAMES, min_size=1, max_size=2))
    changes = []
    for _ in range(draw(st.integers(0, 12))):
        key, table, topic = draw(st.sampled_from(keys)), draw(st.sampled_from(tables)), draw(NAMES)
        op = draw(st.sampled_from([Op.CREATE, Op.UPDATE, Op.DELETE]))
        row = [key] + [draw(values) for values, _ in columns[1:]]
        missing = frozenset(draw(st.sets(st.integers(1, len(row) - 1))) if len(row) > 1 else ())
        if op is Op.DELETE:
            row, missing = [key] + [MISSING] * (len(row) - 1), frozenset()
        for index in missing:
            row[index] = MISSING
        toast = frozenset(names[i] for i in missing) if draw(st.booleans()) else frozenset()
        after = None if op is Op.DELETE else dict(zip(names, row, strict=True))
        millis = draw(st.sampled_from([1_700_000_000_123, 0, -1]) | st.integers(MIN_MS, MAX_MS))
        tx = draw(st.none() | st.sampled_from(["7", "8\t9"]))
        event = ChangeEvent(table, op, {"c0": key}, after, draw(POSITIONS), millis, tx, toast)
        offset = draw(st.integers(0, 2**63 - 1))
        message = Message(topic, draw(st.integers(0, 3)), offset, None, b"")
        ident = change_id(table, key, tx if tx is not None else str(millis))
        changes.append(
            MappedChange(
                Decoded(message, event), "t", key, ident, event.position, op, tuple(row), missing
            )
        )
    return changes, [encoder for _, encoder in columns]


def assert_both_ways_equal(changes: list[MappedChange], encoders: list[Any]) -> None:
    table: Any = SimpleNamespace(encoders=encoders)  # all encode_winners reads of a table
    fast, slow = both(encode.encode_winners, table, collapse(changes))
    assert fast.text == slow.text
    assert (fast.missing_sets, fast.has_deletes, fast.rows, fast.several) == (
        slow.missing_sets,
        slow.has_deletes,
        slow.rows,
        slow.several,
    )
    fast_ledger, slow_ledger = both(encode.encode_ledger, changes)
    assert fast_ledger == slow_ledger
    assert list(fast_ledger.counts) == list(slow_ledger.counts)


@settings(max_examples=300)
@given(batches())
def test_winners_and_ledger(batch: tuple[list[MappedChange], list[Any]]) -> None:
    assert_both_ways_equal(*batch)


def change(key: str, *, topic: str = "cdc.orders", tx: str = "7") -> MappedChange:
    event = ChangeEvent("orders", Op.UPDATE, {"id": key}, {"id": key}, SourcePosition((5,)), 0, tx)
    decoded = Decoded(Message(topic, 0, 3, None, b""), event)
    ident = change_id("orders", key, tx)
    return MappedChange(decoded, "t", key, ident, event.position, Op.UPDATE, (key,))


def test_a_batch_with_a_lone_surrogate_is_encoded_in_python() -> None:
    changes = [change("a"), change("b\ud800"), change("c", tx="8\udfff")]
    with pytest.raises(Unsupported):
        NATIVE.winner_text(collapse(changes), [None], {})
    with pytest.raises(Unsupported):
        NATIVE.ledger_text(changes, {})
    assert_both_ways_equal(changes, [None])


def test_a_topic_named_like_a_source_table() -> None:
    """Found by this file: the Python `encode_ledger` kept escaped table and topic names in
    one dict, so a topic named like a source table got the `table\ttarget` text, one
    column too many, and the batch's COPY failed."""
    changes = [change("a", topic="orders")]
    assert_both_ways_equal(changes, [None])
    with encoders(None):
        line = encode.encode_ledger(changes).text.rstrip("\n")
    assert len(line.split("\t")) == 13 and line.split("\t")[8] == "orders"
