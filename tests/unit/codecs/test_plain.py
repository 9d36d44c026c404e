"""The seed's plain JSON change format → ChangeEvent."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cdc_recon.codecs import decode, decode_plain
from cdc_recon.events import Op, SourcePosition, event_change_id, key_values
from cdc_recon.exceptions import DecodeError


def message(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "table": "customers",
        "operation": "INSERT",
        "key": 7,
        "timestamp": "2024-05-01T12:00:00Z",
        "data": {"id": 7, "name": "Anne"},
    }
    base.update(fields)
    return orjson.dumps({name: value for name, value in base.items() if value is not ...})


def test_insert_with_a_scalar_key() -> None:
    event = decode_plain(message())
    assert (event.table, event.op, dict(event.key)) == ("customers", Op.CREATE, {"": 7})
    assert event.after == {"id": 7, "name": "Anne"}
    assert event.position == SourcePosition((1714564800000,))
    assert (event.source_ts_ms, event.tx, event.unavailable) == (1714564800000, None, frozenset())


def test_change_identity_is_table_key_timestamp() -> None:
    event = decode_plain(message())
    assert event_change_id(event, key_values(event.key, ["id"])) == 'customers:["7"]:1714564800000'


def test_update_with_an_object_key_and_epoch_ms() -> None:
    event = decode_plain(
        message(operation="UPDATE", key={"id": 7, "region": "eu"}, timestamp=1714564800123)
    )
    assert (event.op, dict(event.key)) == (Op.UPDATE, {"id": 7, "region": "eu"})
    assert event.position == SourcePosition((1714564800123,))


def test_delete_ignores_its_data() -> None:
    event = decode_plain(message(operation="DELETE"))
    assert (event.op, event.after) == (Op.DELETE, None)
    assert decode_plain(message(operation="DELETE", data=...)).after is None


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2024-05-01T12:00:00.5Z", 1714564800500),
        ("2024-05-01T14:00:00+02:00", 1714564800000),
        ("2024-05-01 12:00:00", 1714564800000),  # naive: UTC
        ("2024-05-01", 1714521600000),
        (0, 0),
    ],
)
def test_timestamps(timestamp: str | int, expected: int) -> None:
    assert decode_plain(message(timestamp=timestamp)).source_ts_ms == expected


def test_operation_is_case_insensitive() -> None:
    assert decode_plain(message(operation="update")).op is Op.UPDATE


def test_auto_detects_the_plain_format() -> None:
    assert decode(None, message()) == decode_plain(message())
    assert decode(None, message(), fmt="plain") == decode_plain(message())


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"operation": "UPSERT"}, "unknown plain-format operation"),
        ({"data": None}, "without data"),
        ({"data": ...}, "without data"),
        ({"timestamp": "yesterday"}, "not ISO-8601"),
        ({"timestamp": -1}, "position"),
        ({"timestamp": "1969-12-31T23:59:59Z"}, "position"),
        ({"timestamp": 1.5}, "timestamp"),
        ({"key": None}, "scalar or an object"),
        ({"key": [1, 2]}, "scalar or an object"),
        ({"key": {}}, "empty object"),
        ({"key": ...}, "key"),
        ({"table": ""}, "table"),
        ({"table": ...}, "table"),
        ({"data": [1]}, "data"),
    ],
)
def test_bad_messages_raise_decode_error(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_plain(message(**fields))


@pytest.mark.parametrize("value", [None, b"", b"[]", b"not json", b"\x00\x01"])
def test_undecodable_values(value: bytes | None) -> None:
    with pytest.raises(DecodeError):
        decode_plain(value)
    with pytest.raises(DecodeError):
        decode(None, value, fmt="plain")
