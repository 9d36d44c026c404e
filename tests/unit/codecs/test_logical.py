"""Debezium / Kafka Connect logical types → Python values, and the per-schema caches."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest

from cdc_recon.codecs import logical
from cdc_recon.codecs.logical import (
    IDENTITY,
    ConnectSchema,
    RowConverter,
    SchemaCache,
    build_value_converter,
    connect_row_converter,
    converter_for,
    parse_connect_schema,
)
from cdc_recon.exceptions import DecodeError

UTC = dt.UTC
NOON = dt.datetime(2024, 5, 1, 12)
MICRO = dt.timedelta(microseconds=1)


def convert(name: str | None, value: Any, literal: str | None = None, **params: str) -> Any:
    converter = converter_for(name, params or None, literal)
    assert converter is not None, name
    return converter(value)


@pytest.mark.parametrize(
    ("name", "literal", "params", "value", "expected"),
    [
        (logical.CONNECT_DECIMAL, "bytes", {"scale": "2"}, "AeI6", Decimal("1234.50")),
        (logical.CONNECT_DECIMAL, "bytes", {"scale": "2"}, "/w==", Decimal("-0.01")),
        (logical.CONNECT_DECIMAL, "bytes", {"scale": "0"}, "AA==", Decimal("0")),
        (logical.CONNECT_DECIMAL, "bytes", {"scale": "3"}, b"\x01\xe2\x3a", Decimal("123.450")),
        (logical.CONNECT_DECIMAL, "bytes", {"scale": "2"}, 12.3, Decimal("12.30")),
        (logical.CONNECT_DECIMAL, "bytes", {"scale": "2"}, 7, Decimal("7.00")),
        (logical.CONNECT_DECIMAL, "string", {"scale": "2"}, "12.34", Decimal("12.34")),
        (logical.CONNECT_DECIMAL, "bytes", {"scale": "1"}, Decimal("1.5"), Decimal("1.5")),
        (logical.DEBEZIUM_DATE, "int32", {}, 0, dt.date(1970, 1, 1)),
        (logical.DEBEZIUM_DATE, "int32", {}, -1, dt.date(1969, 12, 31)),
        (logical.CONNECT_DATE, "int32", {}, 19844, dt.date(2024, 5, 1)),
        (logical.CONNECT_DATE, "int32", {}, dt.date(2024, 5, 1), dt.date(2024, 5, 1)),
        (logical.DEBEZIUM_TIME, "int32", {}, 52_200_123, dt.time(14, 30, 0, 123000)),
        (logical.CONNECT_TIME, "int32", {}, 1, dt.time(0, 0, 0, 1000)),
        (logical.MICRO_TIME, "int64", {}, 86_399_999_999, dt.time(23, 59, 59, 999999)),
        (logical.NANO_TIME, "int64", {}, 1_999, dt.time(0, 0, 0, 1)),
        (logical.DEBEZIUM_TIMESTAMP, "int64", {}, 1_714_564_800_123, NOON + 123000 * MICRO),
        (logical.CONNECT_TIMESTAMP, "int64", {}, -1, dt.datetime(1969, 12, 31, 23, 59, 59, 999000)),
        (logical.MICRO_TIMESTAMP, "int64", {}, 1_714_564_800_123_456, NOON + 123456 * MICRO),
        (logical.NANO_TIMESTAMP, "int64", {}, 1_714_564_800_123_456_789, NOON + 123456 * MICRO),
        (
            logical.CONNECT_TIMESTAMP,
            "int64",
            {},
            dt.datetime(2024, 5, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.datetime(2024, 5, 1, 12, 0),
        ),
        (logical.ZONED_TIMESTAMP, "string", {}, "2024-05-01T12:00:00Z", NOON.replace(tzinfo=UTC)),
        (
            logical.ZONED_TIMESTAMP,
            "string",
            {},
            "2024-05-01T14:00:00.123456789+02:00",
            dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        ),
        (logical.ZONED_TIME, "string", {}, "14:30:00Z", dt.time(14, 30, tzinfo=UTC)),
        (
            logical.DEBEZIUM_UUID,
            "string",
            {},
            "6F1C2A7E-3B7D-4F5E-9A61-0C8F2D9B4E11",
            uuid.UUID("6f1c2a7e-3b7d-4f5e-9a61-0c8f2d9b4e11"),
        ),
        (None, "bytes", {}, "AQID", b"\x01\x02\x03"),
        ("io.debezium.data.Bits", "bytes", {}, b"\x05", b"\x05"),
    ],
)  # fmt: skip
def test_logical_values(
    name: str, literal: str, params: dict[str, str], value: Any, expected: Any
) -> None:
    result = convert(name, value, literal, **params)
    assert result == expected
    assert type(result) is type(expected)


def test_decimal_keeps_all_38_digits() -> None:
    raw = (-(10**37) - 12345).to_bytes(17, "big", signed=True)
    expected = Decimal("-1000000000000000000000000000.0000012345")
    assert convert(logical.CONNECT_DECIMAL, raw, "bytes", scale="10") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"scale": 3, "value": "9jw="}, Decimal("-2.500")),
        ({"scale": 0, "value": "AQ=="}, Decimal("1")),
        ({"scale": 2, "value": b"\x30\x39"}, Decimal("123.45")),
    ],
)
def test_variable_scale_decimal(value: dict[str, Any], expected: Decimal) -> None:
    assert convert(logical.VARIABLE_SCALE_DECIMAL, value, "struct") == expected


@pytest.mark.parametrize(
    ("name", "literal", "value"),
    [
        (logical.CONNECT_DECIMAL, "bytes", "not base64!"),
        (logical.CONNECT_DECIMAL, "bytes", True),
        (logical.CONNECT_DECIMAL, "bytes", float("inf")),
        (logical.VARIABLE_SCALE_DECIMAL, "struct", {"scale": 1}),
        (logical.VARIABLE_SCALE_DECIMAL, "struct", {"scale": "1", "value": "AQ=="}),
        (logical.VARIABLE_SCALE_DECIMAL, "struct", "AQ=="),
        (logical.DEBEZIUM_DATE, "int32", "2024-05-01"),
        (logical.DEBEZIUM_DATE, "int32", 10**9),
        (logical.MICRO_TIME, "int64", 86_400_000_000),  # PostgreSQL's 24:00:00
        (logical.MICRO_TIME, "int64", -1),
        (logical.MICRO_TIMESTAMP, "int64", 9223372036825200000),  # PostgreSQL's infinity
        (logical.MICRO_TIMESTAMP, "int64", 1.5),
        (logical.ZONED_TIMESTAMP, "string", "infinity"),
        (logical.ZONED_TIMESTAMP, "string", 5),
        (logical.DEBEZIUM_UUID, "string", "not-a-uuid"),
        (None, "bytes", "@@@"),
    ],
)
def test_unconvertible_values_raise_decode_error_naming_the_column(
    name: str | None, literal: str, value: Any
) -> None:
    converter = converter_for(name, {"scale": "2"}, literal)
    assert converter is not None
    row_converter = RowConverter((("col", name or literal, converter),))
    with pytest.raises(DecodeError, match="column 'col'"):
        row_converter({"col": value})


def test_json_and_plain_types_stay_as_they_are() -> None:
    assert converter_for(logical.DEBEZIUM_JSON, None, "string") is None
    assert converter_for(None, None, "string") is None
    assert converter_for("io.debezium.data.Enum", {"allowed": "a,b"}, "string") is None
    assert converter_for(None, None, "array") is None


def test_arrays_of_logical_values_convert_each_element() -> None:
    schema = ConnectSchema(
        type="array", items=ConnectSchema(type="int32", name=logical.DEBEZIUM_DATE), field="days"
    )
    converter = connect_row_converter(ConnectSchema(type="struct", fields=[schema]))
    assert converter({"days": [0, None, 1]}) == {
        "days": [dt.date(1970, 1, 1), None, dt.date(1970, 1, 2)]
    }


def test_decimal_schema_with_a_bad_scale_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="invalid scale"):
        converter_for(logical.CONNECT_DECIMAL, {"scale": "two"}, "bytes")


def test_row_converter_touches_only_logical_columns_and_skips_nulls() -> None:
    schema = parse_connect_schema(
        orjson.dumps(
            {
                "type": "struct",
                "fields": [
                    {"type": "int32", "field": "id"},
                    {"type": "int32", "name": logical.DEBEZIUM_DATE, "field": "d"},
                    {"type": "string", "name": logical.DEBEZIUM_UUID, "field": "u"},
                ],
            }
        )
    )
    converter = connect_row_converter(schema)
    assert [column for column, _, _ in converter.columns] == ["d", "u"]
    assert converter({"id": 7, "d": None, "extra": "x"}) == {"id": 7, "d": None, "extra": "x"}


def test_without_a_schema_nothing_is_converted() -> None:
    assert connect_row_converter(None) is IDENTITY
    assert parse_connect_schema(b"null") is None
    assert build_value_converter(b"null") is IDENTITY
    row = {"total": "AeI6"}
    assert IDENTITY(row) == {"total": "AeI6"}


def test_envelope_converter_is_the_after_field_s() -> None:
    envelope = {
        "type": "struct",
        "fields": [
            {"type": "struct", "field": "before", "fields": [{"type": "int32", "field": "x"}]},
            {
                "type": "struct",
                "field": "after",
                "fields": [{"type": "int32", "name": logical.DEBEZIUM_DATE, "field": "x"}],
            },
        ],
    }
    converter = build_value_converter(orjson.dumps(envelope))
    assert converter({"x": 1}) == {"x": dt.date(1970, 1, 2)}


@pytest.mark.parametrize("schema", [b"[1]", b'{"fields": []}', b'{"type": "struct", "fields": 3}'])
def test_malformed_schemas_are_decode_errors(schema: bytes) -> None:
    with pytest.raises(DecodeError, match="malformed Connect schema"):
        parse_connect_schema(schema)


def test_schema_cache_builds_once_per_distinct_schema() -> None:
    built: list[bytes] = []

    def build(schema_json: bytes) -> RowConverter:
        built.append(schema_json)
        return RowConverter()

    cache = SchemaCache(build, maxsize=3)
    first = msgspec.Raw(b'{"type":"struct","name":"a"}')
    same_length = msgspec.Raw(b'{"type":"struct","name":"b"}')
    assert cache(first) is cache(msgspec.Raw(bytes(first)))
    assert cache(same_length) is not cache(first)
    assert built == [bytes(first), bytes(same_length)]
    assert len(cache) == 2


def test_schema_cache_is_bounded() -> None:
    cache = SchemaCache(lambda _: RowConverter(), maxsize=2)
    for n in range(5):
        cache(msgspec.Raw(b'{"n": %d}' % n))
        assert len(cache) <= 2
