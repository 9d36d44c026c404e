"""The seed's plain JSON change format → `ChangeEvent`.

    {"table": "customers", "operation": "INSERT" | "UPDATE" | "DELETE",
     "key": <scalar or object>, "timestamp": <ISO-8601 string or epoch ms>,
     "data": {...}}

The event timestamp is both the position, `(timestamp_ms,)`, and the change identity's
transaction part (`tx` stays None, see `cdc_recon.events.event_change_id`). A scalar key
becomes `{"": value}` until the table mapping names its column. A DELETE may carry `data`;
it is ignored. An ISO timestamp without an offset is taken as UTC.

    >>> event = decode_plain(b'{"table": "customers", "operation": "DELETE", "key": 7,'
    ...                      b' "timestamp": "2024-05-01T12:00:00Z"}')
    >>> event.op.value, dict(event.key), str(event.position), event.after
    ('d', {'': 7}, '1714564800000', None)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from cdc_recon.events import ChangeEvent, Op, SourcePosition
from cdc_recon.exceptions import DecodeError

OPERATIONS = {"INSERT": Op.CREATE, "UPDATE": Op.UPDATE, "DELETE": Op.DELETE}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MILLISECOND = dt.timedelta(milliseconds=1)


class PlainMessage(msgspec.Struct):
    table: str
    operation: str
    key: Any
    timestamp: int | str
    data: dict[str, Any] | None = None


_DECODER = msgspec.json.Decoder(PlainMessage)


def decode_plain(value: bytes | None) -> ChangeEvent:
    """Decode one plain-format message; every failure is a `DecodeError`."""
    if value is None:
        raise DecodeError("plain-format message without a value")
    try:
        message = _DECODER.decode(value)
    except msgspec.MsgspecError as exc:
        raise DecodeError(f"invalid plain-format message: {exc}") from exc
    return to_event(message)


def to_event(message: PlainMessage) -> ChangeEvent:
    op = OPERATIONS.get(message.operation.upper())
    if op is None:
        raise DecodeError(f"unknown plain-format operation {message.operation!r}")
    ts_ms = timestamp_ms(message.timestamp)
    after = None
    if op is not Op.DELETE:
        if message.data is None:
            raise DecodeError(f"{message.operation} of {message.table} without data")
        after = message.data
    try:
        position = SourcePosition((ts_ms,))
        key = row_key(message.key)
        return ChangeEvent(message.table, op, key, after, position, ts_ms, connector="plain")
    except ValueError as exc:
        raise DecodeError(f"invalid plain-format change of {message.table!r}: {exc}") from exc


def row_key(key: Any) -> dict[str, Any]:
    """An object key as it is; a scalar key under the empty column name."""
    if isinstance(key, dict):
        if not key:
            raise DecodeError("plain-format key is an empty object")
        return key
    if isinstance(key, str | int | float | bool):
        return {"": key}
    raise DecodeError(f"plain-format key must be a scalar or an object, not {key!r}")


def timestamp_ms(value: int | str) -> int:
    """Epoch milliseconds from an integer or an ISO-8601 string (UTC when naive)."""
    if isinstance(value, int):
        return value
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise DecodeError(f"timestamp {value!r} is not ISO-8601") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // _MILLISECOND
