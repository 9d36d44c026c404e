"""Property tests: round trips, numeric position order, TOAST, hostile input."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc_recon.codecs import AvroDecoder, decode, encode_change_event
from cdc_recon.codecs.avro import change_event_schema_text
from cdc_recon.codecs.debezium import PLACEHOLDER_FORMS
from cdc_recon.events import MAX_SOURCE_TS_MS, MIN_SOURCE_TS_MS, ChangeEvent, Op, SourcePosition
from cdc_recon.exceptions import DecodeError

EPOCH = dt.datetime(1970, 1, 1)
COLUMNS = ["id", "price", "born", "seen_at", "ref", "note"]
int64 = st.integers(-(2**63), 2**63 - 1)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)


class Registry:
    def __init__(self) -> None:
        self.text = change_event_schema_text()

    def get_schema(self, schema_id: int) -> Registry:
        return self

    @property
    def schema_str(self) -> str:
        return self.text


AVRO = AvroDecoder(Registry())


def field(name: str, kind: str, logical: str | None = None, **params: str) -> dict[str, Any]:
    described: dict[str, Any] = {"type": kind, "optional": True, "field": name}
    if logical is not None:
        described["name"] = logical
    if params:
        described["parameters"] = params
    return described


def row_schema(scale: int) -> list[dict[str, Any]]:
    return [
        field("id", "int64"),
        field("price", "bytes", "org.apache.kafka.connect.data.Decimal", scale=str(scale)),
        field("born", "int32", "io.debezium.time.Date"),
        field("seen_at", "int64", "io.debezium.time.MicroTimestamp"),
        field("ref", "string", "io.debezium.data.Uuid"),
        field("note", "string"),
    ]


def pg_value(
    after: dict[str, Any] | None,
    *,
    op: str = "c",
    lsn: int = 100,
    schema: list[dict[str, Any]] | None = None,
) -> bytes:
    source = {"connector": "postgresql", "ts_ms": 1, "schema": "public", "table": "t"}
    payload = {
        "before": None,
        "after": after,
        "source": {**source, "txId": 9, "lsn": lsn},
        "op": op,
        "ts_ms": 2,
    }
    if schema is None:
        return orjson.dumps(payload)
    after_schema = {"type": "struct", "fields": schema, "field": "after"}
    return orjson.dumps(
        {"schema": {"type": "struct", "fields": [after_schema]}, "payload": payload}
    )


def unscaled_base64(value: Decimal, scale: int) -> str:
    unscaled = int(value.scaleb(scale))
    size = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()


rows = st.fixed_dictionaries(
    {
        "id": int64,
        "scale": st.integers(0, 12),
        "digits": st.integers(-(10**38) + 1, 10**38 - 1),
        "born": st.dates(),
        "seen_at": st.datetimes(),
        "ref": st.uuids(),
        "note": st.text(),
    }
)


@given(rows)
def test_debezium_json_round_trip(row: dict[str, Any]) -> None:
    scale = row["scale"]
    price = Decimal(row["digits"]).scaleb(-scale)
    seen_at: dt.datetime = row["seen_at"]
    encoded = {
        "id": row["id"],
        "price": unscaled_base64(price, scale),
        "born": (row["born"] - dt.date(1970, 1, 1)).days,
        "seen_at": (seen_at - EPOCH) // dt.timedelta(microseconds=1),
        "ref": str(row["ref"]),
        "note": row["note"],
    }
    event = decode(b'{"id": 1}', pg_value(encoded, schema=row_schema(scale)))
    assert event is not None
    assert event.after == {
        "id": row["id"],
        "price": price,
        "born": row["born"],
        "seen_at": seen_at,
        "ref": row["ref"],
        "note": row["note"],
    }
    assert event.after["price"].as_tuple().exponent == -scale


@given(st.integers(1, 2**60 - 1), st.integers(1, 2**60 - 1))
def test_postgres_positions_order_as_numbers(lsn_a: int, lsn_b: int) -> None:
    a = decode(b'{"id": 1}', pg_value({"id": 1}, lsn=lsn_a))
    b = decode(b'{"id": 1}', pg_value({"id": 1}, lsn=lsn_b))
    assert a is not None and b is not None
    assert (a.position < b.position) == (lsn_a < lsn_b)
    assert (a.position == b.position) == (lsn_a == lsn_b)


def test_lsn_9_is_before_lsn_10() -> None:
    nine = decode(b'{"id": 1}', pg_value({"id": 1}, lsn=9))
    ten = decode(b'{"id": 1}', pg_value({"id": 1}, lsn=10))
    assert nine is not None and ten is not None and nine.position < ten.position


def mysql_value(file_index: int, pos: int, row: int) -> bytes:
    binlog = {"file": f"mysql-bin.{file_index:06d}", "pos": pos, "row": row}
    source = {"connector": "mysql", "ts_ms": 1, "db": "shop", "table": "t", **binlog}
    return orjson.dumps({"after": {"id": 1}, "source": source, "op": "u"})


binlog = st.tuples(st.integers(0, 999_999), st.integers(0, 2**32 - 1), st.integers(0, 1000))


@given(binlog, binlog)
def test_mysql_positions_order_as_numbers(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    first, second = decode(b'{"id":1}', mysql_value(*a)), decode(b'{"id":1}', mysql_value(*b))
    assert first is not None and second is not None
    assert (first.position < second.position) == (a < b)


def test_binlog_000009_is_before_000010() -> None:
    nine = decode(b'{"id":1}', mysql_value(9, 4, 0))
    ten = decode(b'{"id":1}', mysql_value(10, 4, 0))
    assert nine is not None and ten is not None
    assert nine.position < ten.position and str(nine.position) == "9/4/0"


placeholders = st.sampled_from(sorted(form for form in PLACEHOLDER_FORMS if isinstance(form, str)))
column_values = st.one_of(st.none(), int64, st.text(max_size=60), st.lists(st.text()))


@given(
    st.dictionaries(st.sampled_from(COLUMNS), column_values, min_size=1),
    st.dictionaries(st.sampled_from(COLUMNS), placeholders),
    st.booleans(),
    st.sampled_from(["c", "u", "r"]),
)
def test_toast_placeholder_never_survives(
    row: dict[str, Any], toasted: dict[str, str], in_array: bool, op: str
) -> None:
    after = {**row, **{c: [v] if in_array else v for c, v in toasted.items()}}
    event = decode(b'{"id": 1}', pg_value(after, op=op))
    assert event is not None and event.after is not None
    assert event.unavailable == frozenset(toasted)
    assert event.after == {c: v for c, v in row.items() if c not in toasted}
    for value in event.after.values():
        items = value if isinstance(value, list) else [value]
        assert not [item for item in items if isinstance(item, str) and item in PLACEHOLDER_FORMS]


def only_decode_errors(key: bytes | None, value: bytes | None, **options: Any) -> None:
    try:
        result = decode(key, value, **options)
    except DecodeError:
        return
    assert result is None or isinstance(result, ChangeEvent)
    if value is None:
        assert result is None


@given(st.one_of(st.none(), st.binary()), st.one_of(st.none(), st.binary()))
def test_random_bytes_raise_only_decode_errors(key: bytes | None, value: bytes | None) -> None:
    only_decode_errors(key, value, avro=AVRO)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
vocabulary = st.sampled_from(
    ["op", "source", "after", "before", "payload", "schema", "connector", "ts_ms", "txId", "lsn",
     "table", "operation", "key", "timestamp", "data", "file", "pos", "sequence", "fields"]
)  # fmt: skip
envelope_like = st.recursive(
    json_values,
    lambda inner: st.dictionaries(vocabulary, inner, max_size=6),
    max_leaves=30,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(envelope_like, envelope_like, st.sampled_from(["auto", "debezium", "plain"]))
def test_random_json_raises_only_decode_errors(key: Any, value: Any, fmt: str) -> None:
    # stdlib json: it also writes integers beyond 64 bits
    only_decode_errors(json.dumps(key).encode(), json.dumps(value).encode(), fmt=fmt)


@given(st.binary())
def test_random_avro_bodies_raise_only_decode_errors(body: bytes) -> None:
    only_decode_errors(None, b"\x00\x00\x00\x00\x01" + body, avro=AVRO)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    int64,
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)
images = st.dictionaries(st.text(), scalars)


@st.composite
def change_events(draw: st.DrawFn) -> ChangeEvent:
    op = draw(st.sampled_from(list(Op)))
    return ChangeEvent(
        table=draw(st.text(min_size=1)),
        op=op,
        key={} if op is Op.TRUNCATE else draw(images),
        after=draw(images) if op.writes_row else None,
        position=SourcePosition(tuple(draw(st.lists(st.integers(0, 2**63 - 1), min_size=1)))),
        source_ts_ms=draw(st.integers(MIN_SOURCE_TS_MS, MAX_SOURCE_TS_MS)),
        tx=draw(st.none() | st.text()),
        unavailable=frozenset(draw(st.lists(st.text()))),
    )


@given(change_events(), st.integers(0, 2**31 - 1))
def test_avro_change_event_round_trip(event: ChangeEvent, schema_id: int) -> None:
    message = encode_change_event(event, schema_id)
    assert int.from_bytes(message[1:5], "big") == schema_id
    assert AVRO.decode(None, message) == event


json_scalars = st.one_of(st.none(), st.booleans(), int64, finite_floats, st.text())
plain_keys = st.one_of(int64, st.text(), st.dictionaries(st.text(), json_scalars, min_size=1))


@given(
    st.sampled_from(["INSERT", "UPDATE", "DELETE"]),
    plain_keys,
    st.datetimes(min_value=dt.datetime(1970, 1, 1), timezones=st.just(dt.UTC)),
    st.dictionaries(st.text(), int64 | st.text()),
)
def test_plain_round_trip(
    operation: str, key: Any, moment: dt.datetime, data: dict[str, Any]
) -> None:
    ts_ms = (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
    message = {"table": "t", "operation": operation, "key": key, "data": data}
    event = decode(None, orjson.dumps({**message, "timestamp": moment.isoformat()}))
    assert event is not None
    assert event.position == SourcePosition((ts_ms,)) and event.tx is None
    assert dict(event.key) == (key if isinstance(key, dict) else {"": key})
    assert event.after == (None if operation == "DELETE" else data)
