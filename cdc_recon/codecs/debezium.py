"""Debezium change events (JSON converter, with or without schemas) → `ChangeEvent`.

The JSON converter writes a value either as the bare envelope
(`schemas.enable=false`: `{"before", "after", "source", "op", "ts_ms", ...}`) or wrapped
with its Connect schema (`{"schema": {...}, "payload": <envelope>}`); the key likewise.
`to_event` is the one normalisation both this module and the Avro decoder use:

- table: `schema.table` for PostgreSQL, `db.table` for MySQL/MariaDB;
- position: PostgreSQL `(lsn,)` (or the last element of `source.sequence` when the LSN
  is missing), MySQL `(binlog file index, pos, row)`: integers, never strings, so
  `mysql-bin.000010` orders after `mysql-bin.000009`;
- tx: PostgreSQL's 32-bit xid (`pg_tx`), MySQL's GTID or else `file:pos`;
- key: the Kafka message key (a delete has no `after` to take it from); a truncate has
  none and gets `{}`;
- unchanged-TOAST columns (Debezium's `unavailable.value.placeholder`) are removed from
  `after` and listed in `unavailable`, so they never overwrite the stored value.

Tombstones: after a delete, Debezium writes the same key again with a null value. It only
exists so that Kafka's log compaction may drop every earlier message of that key; it has
no source position, transaction or table, so there is nothing to apply: the delete event
before it is the change. `decode` returns None for it and the caller commits past it.
(If compaction already removed the delete itself, the sweeper sees that change missing.)

    >>> value = (b'{"op": "c", "after": {"id": 1}, "source": {"connector": "postgresql",'
    ...          b' "ts_ms": 1559033904863, "schema": "public", "table": "customers",'
    ...          b' "txId": 555, "lsn": 24023128}}')
    >>> event = decode_debezium(b'{"id": 1}', value)
    >>> event.table, event.op.value, dict(event.key), str(event.position), event.tx
    ('public.customers', 'c', {'id': 1}, '24023128', '555')
"""

from __future__ import annotations

import re
from typing import Any, Generic, TypeVar

import msgspec
import orjson
from msgspec import UNSET, UnsetType

from cdc_recon.codecs.logical import IDENTITY, RowConverter, key_converter, value_converter
from cdc_recon.events import ChangeEvent, Op, SourcePosition, pg_tx
from cdc_recon.exceptions import DecodeError

PLACEHOLDER = "__debezium_unavailable_value"
# The same placeholder as it appears in a bytes column: raw (Avro), base64 (the JSON
# converter's bytes, `binary.handling.mode=base64` and `base64-url-safe`) or hex.
PLACEHOLDER_FORMS: frozenset[str | bytes] = frozenset(
    {
        PLACEHOLDER,
        PLACEHOLDER.encode(),
        "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==",
        "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ",
        PLACEHOLDER.encode().hex(),
        PLACEHOLDER.encode().hex().upper(),
    }
)

_PLACEHOLDER_LENGTHS = frozenset(len(form) for form in PLACEHOLDER_FORMS)

OPS = {"c": Op.CREATE, "u": Op.UPDATE, "d": Op.DELETE, "r": Op.READ, "t": Op.TRUNCATE}
_OPS = {code: (op, op.writes_row) for code, op in OPS.items()}  # enum lookups are slow
_TRUNCATE = Op.TRUNCATE
_NONE_UNAVAILABLE: frozenset[str] = frozenset()
_BINLOG_INDEX = re.compile(r"(\d+)\Z")
# What each connector can send; anything outside is refused, never wrapped or clamped.
TXID_RANGE = range(2**32)  # source.txId: PostgreSQL's 32-bit xid
# An LSN is a WAL byte offset: 2^60 bytes is 36 years of WAL at 1 GB/s. A position past
# anything a server writes would freeze its key against every later change.
LSN_RANGE = range(1, 2**60)
BINLOG_INDEX_RANGE = range(2**31)
BINLOG_POS_RANGE = range(2**32)  # a binlog event's position field is 32 bits
BINLOG_ROW_RANGE = range(2**31)
_FAMILY = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}


class Source(msgspec.Struct, gc=False):
    """The envelope's `source` block: where in the source's log the change sits."""

    connector: str
    ts_ms: int
    db: str | None = None
    schema: str | None = None
    table: str | None = None
    tx_id: int | None = msgspec.field(default=None, name="txId")
    lsn: int | None = None
    sequence: str | None = None
    file: str | None = None
    pos: int | None = None
    row: int | None = None
    gtid: str | None = None


class Transaction(msgspec.Struct, gc=False):
    """Present with `provide.transaction.metadata=true`."""

    id: str
    total_order: int | None = None
    data_collection_order: int | None = None


class Envelope(msgspec.Struct, gc=False):
    """A Debezium change event value; row images stay plain dicts."""

    op: str
    source: Source
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    ts_ms: int | None = None
    transaction: Transaction | None = None


class JsonValue(msgspec.Struct, gc=False):
    """A message value as the JSON converter writes it, wrapped in schema/payload or not.

    One decode reads either form; `schema` is kept raw, as the key of its converter.
    """

    schema: msgspec.Raw | UnsetType = UNSET
    payload: Envelope | None | UnsetType = UNSET
    op: str | UnsetType = UNSET
    source: Source | UnsetType = UNSET
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    ts_ms: int | None = None
    transaction: Transaction | None = None

    def envelope(self) -> Envelope | None:
        """The envelope; None for a wrapped tombstone (`"payload": null`)."""
        if not isinstance(self.payload, UnsetType):
            return self.payload
        if isinstance(self.op, UnsetType) or isinstance(self.source, UnsetType):
            raise DecodeError("not a Debezium envelope: needs payload, or op and source")
        return Envelope(self.op, self.source, self.before, self.after, self.ts_ms, self.transaction)


class WrappedKey(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A message key with `schemas.enable=true`; any other field means a bare key."""

    schema: msgspec.Raw
    payload: dict[str, Any] | None


_VALUE_DECODER = msgspec.json.Decoder(JsonValue)
_WRAPPED_KEY_DECODER = msgspec.json.Decoder(WrappedKey)
_BARE_KEY_DECODER = msgspec.json.Decoder(dict[str, Any])

Payload = TypeVar("Payload")
Read = tuple[Envelope | None, RowConverter]


class SchemaPrefixes(Generic[Payload]):
    """Skips re-reading a schema that earlier messages already carried.

    The JSON converter writes `{"schema":<S>,"payload":<P>}` compactly, and S, a few
    kilobytes for a value, is the same on every message of a table. When a message starts
    with a prefix seen before, byte for byte, only P is decoded, and S's converter is
    the cached one. Anything else (a new schema, other spacing, more fields) takes the
    full parse, which remembers the prefix.
    """

    def __init__(self, decoder: msgspec.json.Decoder[Payload], size: int = 32) -> None:
        self._decoder = decoder
        self._size = size
        self._recent: list[tuple[bytes, RowConverter]] = []

    def read(self, message: bytes) -> tuple[Payload, RowConverter] | None:
        if message[-1:] != b"}":
            return None
        for prefix, convert in self._recent:
            if message.startswith(prefix):
                try:
                    payload = self._decoder.decode(memoryview(message)[len(prefix) : -1])
                except msgspec.MsgspecError:
                    return None  # the full parse reports it
                return payload, convert
        return None

    def remember(self, message: bytes, schema: msgspec.Raw, convert: RowConverter) -> None:
        prefix = b'{"schema":' + bytes(schema) + b',"payload":'
        if message.startswith(prefix):
            self._recent = [(prefix, convert), *self._recent[: self._size - 1]]


_VALUE_PREFIXES = SchemaPrefixes(msgspec.json.Decoder(Envelope | None))
_KEY_PREFIXES = SchemaPrefixes(msgspec.json.Decoder(dict[str, Any] | None))


def read_value(value: bytes) -> Read | None:
    """The envelope (None for a tombstone) and `after` converter of a Debezium JSON value.

    None when the value is a JSON object but not a Debezium envelope (no `payload`, nor
    `op` and `source`), so that the caller may try another format.
    """
    if not value.isascii():  # msgspec skips what it ignores (unknown fields, a schema's
        _require_utf8(value, "value")  # unread parts) without checking its UTF-8
    known = _VALUE_PREFIXES.read(value)
    if known is not None:
        return known
    try:
        parsed = _VALUE_DECODER.decode(value)
    except msgspec.MsgspecError as exc:
        raise DecodeError(f"invalid Debezium JSON value: {exc}") from exc
    if parsed.payload is UNSET and (parsed.op is UNSET or parsed.source is UNSET):
        return None
    if isinstance(parsed.schema, UnsetType):
        return parsed.envelope(), IDENTITY
    convert = value_converter(parsed.schema)
    if parsed.payload is not UNSET:
        _VALUE_PREFIXES.remember(value, parsed.schema, convert)
    return parsed.envelope(), convert


def decode_debezium(key: bytes | None, value: bytes | None) -> ChangeEvent | None:
    """Decode one Debezium JSON message; None for a tombstone (see the module docstring)."""
    if value is None:
        return None
    read = read_value(value)
    if read is None:
        raise DecodeError("not a Debezium envelope: needs payload, or op and source")
    envelope, convert_after = read
    return None if envelope is None else to_event(envelope, decode_key(key), convert_after)


def decode_key(key: bytes | None) -> dict[str, Any] | None:
    """The row key from a JSON message key, wrapped in schema/payload or bare.

    A bare key whose only columns are named `schema` and `payload` reads as wrapped.
    """
    if key is None:
        return None
    if not key.isascii():
        _require_utf8(key, "key")
    payload, convert = _KEY_PREFIXES.read(key) or _read_key(key)
    if payload is None or convert is IDENTITY:
        return payload
    return convert(payload)


def _require_utf8(data: bytes, what: str) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"message {what} is not UTF-8 JSON: {exc}") from None


def _read_key(key: bytes) -> tuple[dict[str, Any] | None, RowConverter]:
    try:
        wrapped = _WRAPPED_KEY_DECODER.decode(key)
    except msgspec.ValidationError:
        try:
            return _BARE_KEY_DECODER.decode(key), IDENTITY
        except msgspec.MsgspecError as exc:
            raise DecodeError(f"message key is not a JSON object: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise DecodeError(f"message key is not JSON: {exc}") from exc
    convert = key_converter(wrapped.schema)
    _KEY_PREFIXES.remember(key, wrapped.schema, convert)
    return wrapped.payload, convert


def to_event(
    envelope: Envelope, key: dict[str, Any] | None, convert_after: RowConverter
) -> ChangeEvent:
    """Normalise a Debezium envelope (from JSON or Avro) into a `ChangeEvent`."""
    known = _OPS.get(envelope.op)
    if known is None:
        raise DecodeError(f"unsupported Debezium op {envelope.op!r}")
    op, writes_row = known
    source = envelope.source
    table, position, tx = locate(source)
    after: dict[str, Any] | None = None
    unavailable = _NONE_UNAVAILABLE
    if op is _TRUNCATE:
        key = {}
    elif key is None:
        raise DecodeError(f"no message key for a {op.name.lower()} of {table}")
    if writes_row:
        if envelope.after is None:
            raise DecodeError(f"op {op.value!r} of {table} without an after image")
        after, unavailable = strip_unavailable(envelope.after)
        after = convert_after(after)
    family = _FAMILY[source.connector]
    try:
        return ChangeEvent(
            table,
            op,
            key,
            after,
            position,
            source.ts_ms,
            tx,
            unavailable,
            family,
            convert_after.fields,
        )
    except ValueError as exc:
        raise DecodeError(f"invalid change event for {table}: {exc}") from exc


def locate(source: Source) -> tuple[str, SourcePosition, str]:
    """Table, source position and transaction marker of a change, by connector."""
    if source.connector == "postgresql":
        return _postgres(source)
    if source.connector in ("mysql", "mariadb"):
        return _mysql(source)
    raise DecodeError(f"unsupported Debezium connector {source.connector!r}")


def _postgres(source: Source) -> tuple[str, SourcePosition, str]:
    if not source.schema or not source.table or source.tx_id is None:
        raise DecodeError(
            f"PostgreSQL source needs schema, table and txId: {msgspec.structs.asdict(source)}"
        )
    table = f"{source.schema}.{source.table}"
    lsn = source.lsn if source.lsn is not None else _last_sequence_lsn(source.sequence)
    _in_range(table, "txId", source.tx_id, TXID_RANGE)
    _in_range(table, "lsn", lsn, LSN_RANGE)
    return table, SourcePosition((lsn,)), pg_tx(source.tx_id)


def _in_range(table: str, name: str, value: int, allowed: range) -> None:
    if value not in allowed:
        raise DecodeError(
            f"source.{name} {value} of {table} is not a position or transaction id the "
            f"connector sends: outside [{allowed.start}, {allowed.stop})"
        )


def _last_sequence_lsn(sequence: str | None) -> int:
    """`source.sequence` is a JSON array of LSNs as strings; the last is this change's."""
    if sequence is None:
        raise DecodeError("PostgreSQL source has neither lsn nor sequence")
    try:
        lsns = orjson.loads(sequence)
        return int(lsns[-1])
    except (orjson.JSONDecodeError, TypeError, ValueError, LookupError, KeyError) as exc:
        raise DecodeError(f"unreadable source.sequence {sequence!r}") from exc


def _mysql(source: Source) -> tuple[str, SourcePosition, str]:
    if not source.db or not source.table or source.file is None or source.pos is None:
        raise DecodeError(
            f"MySQL source needs db, table, file and pos: {msgspec.structs.asdict(source)}"
        )
    table = f"{source.db}.{source.table}"
    index = _BINLOG_INDEX.search(source.file)
    if index is None:
        raise DecodeError(f"binlog file name {source.file!r} has no numeric suffix")
    number, row = int(index.group(1)), source.row or 0
    _in_range(table, "file", number, BINLOG_INDEX_RANGE)
    _in_range(table, "pos", source.pos, BINLOG_POS_RANGE)
    _in_range(table, "row", row, BINLOG_ROW_RANGE)
    tx = source.gtid or f"{source.file}:{source.pos}"
    return table, SourcePosition((number, source.pos, row)), tx


def strip_unavailable(row: dict[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """Remove the columns Debezium did not send (unchanged TOAST) and name them."""
    for value in row.values():  # the common case, no placeholder: one cheap pass
        kind = type(value)
        if kind is str:
            if len(value) in _PLACEHOLDER_LENGTHS and value in PLACEHOLDER_FORMS:
                break
        elif kind is list or kind is bytes:
            break
    else:
        return row, _NONE_UNAVAILABLE
    missing = frozenset(column for column, value in row.items() if is_placeholder(value))
    if not missing:
        return row, missing
    for column in missing:
        del row[column]
    return row, missing


def is_placeholder(value: Any) -> bool:
    """Whether a column value is the placeholder in any form, or an array holding it."""
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value) in _PLACEHOLDER_LENGTHS and value in PLACEHOLDER_FORMS
    if kind is list:
        return any(type(item) in (str, bytes) and item in PLACEHOLDER_FORMS for item in value)
    return False
