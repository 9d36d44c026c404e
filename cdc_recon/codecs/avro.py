"""Avro values in the Confluent wire format → `ChangeEvent`.

A message is the magic byte 0, the writer schema's registry id (4 bytes, big-endian) and
the Avro binary body. Two writer schemas are understood:

- `io.cdcrecon.ChangeEvent` (`schemas/change_event.avsc`): our own normalised event, as
  `encode_change_event` writes it; it maps onto `ChangeEvent` field by field.
- a Debezium envelope (a record with `op`, `source`, `after`...), as Debezium's Avro
  converter writes it; it goes through the same `debezium.to_event` as JSON events, with
  the logical types read from each field's `connect.name` / `connect.parameters`.

Schemas are fetched once per id from the registry and kept with their converters. The key
may be Avro too (a record, Debezium's key struct) or JSON. An id the registry does not
know (HTTP 404) is a `DecodeError`; any other registry failure is `ConnectionFailed`,
since the message itself may be fine.

    >>> decoder = AvroDecoder(registry)  # doctest: +SKIP
    >>> event = decoder.decode(message.key(), message.value())  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol

import fastavro
import msgspec
import orjson

from cdc_recon.codecs import debezium
from cdc_recon.codecs.logical import (
    IDENTITY,
    VARIABLE_SCALE_DECIMAL,
    Converter,
    RowConverter,
    converter_for,
    variable_scale_decimal,
)
from cdc_recon.events import ChangeEvent, Op, SourcePosition
from cdc_recon.exceptions import ConnectionFailed, DecodeError

MAGIC = b"\x00"
CHANGE_EVENT_NAME = "io.cdcrecon.ChangeEvent"
CHANGE_EVENT_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "change_event.avsc"
MAX_CACHED_SCHEMAS = 1024

Kind = Literal["event", "envelope", "record", "other"]


class RegisteredSchema(Protocol):
    @property
    def schema_str(self) -> str | None: ...


class SchemaRegistry(Protocol):
    """What the decoder needs of `confluent_kafka.schema_registry.SchemaRegistryClient`."""

    def get_schema(self, schema_id: int) -> RegisteredSchema: ...


@dataclass(frozen=True, slots=True)
class _Plan:
    """A writer schema, parsed once: what it describes and how to convert its rows."""

    parsed: Any
    kind: Kind
    name: str
    convert: RowConverter


class AvroDecoder:
    """Decodes Confluent wire-format Avro messages, caching writer schemas by id."""

    def __init__(self, registry: SchemaRegistry, *, max_schemas: int = MAX_CACHED_SCHEMAS):
        self._registry = registry
        self._max_schemas = max_schemas
        self._plans: dict[int, _Plan] = {}

    def decode(self, key: bytes | None, value: bytes | None) -> ChangeEvent | None:
        """The change in `value`; None for a tombstone (null value)."""
        if value is None:
            return None
        plan, record = self._read(value)
        if plan.kind == "event":
            return event_from_record(record)
        if plan.kind == "envelope":
            envelope = envelope_from_record(record)
            return debezium.to_event(envelope, self.decode_key(key), plan.convert)
        raise DecodeError(
            f"Avro schema {plan.name!r} is neither {CHANGE_EVENT_NAME} nor a Debezium envelope"
        )

    def decode_key(self, key: bytes | None) -> dict[str, Any] | None:
        """The row key from an Avro (wire format) or JSON message key."""
        if key is None or key[:1] != MAGIC:
            return debezium.decode_key(key)
        plan, record = self._read(key)
        if plan.kind != "record" or not isinstance(record, dict):
            raise DecodeError(f"Avro message key {plan.name!r} is not a record")
        return plan.convert(record)

    def _read(self, message: bytes) -> tuple[_Plan, Any]:
        if len(message) < 5 or message[:1] != MAGIC:
            raise DecodeError("not in the Confluent wire format (magic byte 0, 4-byte id)")
        schema_id = int.from_bytes(message[1:5], "big")
        plan = self._plans.get(schema_id) or self._load(schema_id)
        stream = io.BytesIO(message)
        stream.seek(5)
        try:
            record = fastavro.schemaless_reader(stream, plan.parsed, None)
        except Exception as exc:  # fastavro raises many kinds on corrupt input
            raise DecodeError(f"Avro body does not match schema id {schema_id}: {exc!r}") from exc
        if stream.tell() != len(message):
            raise DecodeError(f"trailing bytes after the Avro body (schema id {schema_id})")
        return plan, record

    def _load(self, schema_id: int) -> _Plan:
        plan = plan_schema(self._fetch(schema_id), schema_id)
        if len(self._plans) >= self._max_schemas:
            del self._plans[next(iter(self._plans))]
        self._plans[schema_id] = plan
        return plan

    def _fetch(self, schema_id: int) -> str:
        try:
            schema_str = self._registry.get_schema(schema_id).schema_str
        except Exception as exc:  # translate the registry client's errors at the boundary
            if getattr(exc, "http_status_code", None) == 404:
                raise DecodeError(f"schema id {schema_id} is not in the registry") from exc
            raise ConnectionFailed(f"schema registry: {exc}", service="schema-registry") from exc
        if not schema_str:
            raise DecodeError(f"schema id {schema_id} has no schema text")
        return schema_str


def plan_schema(schema_str: str, schema_id: int) -> _Plan:
    """Parse a writer schema and work out what it describes."""
    try:
        raw = orjson.loads(schema_str)
        parsed = fastavro.parse_schema(raw)
    except Exception as exc:  # orjson and fastavro parse errors
        raise DecodeError(f"schema id {schema_id} is not a valid Avro schema: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("type") != "record":
        return _Plan(parsed, "other", str(raw), IDENTITY)
    named = named_records(raw)
    name = _fullname(raw, "")
    fields = {field["name"]: field["type"] for field in raw["fields"]}
    if name == CHANGE_EVENT_NAME:
        return _Plan(parsed, "event", name, IDENTITY)
    if {"op", "source", "after"} <= fields.keys():
        after = _resolve(fields["after"], named)
        convert = row_converter(after, named) if isinstance(after, dict) else IDENTITY
        return _Plan(parsed, "envelope", name, convert)
    return _Plan(parsed, "record", name, row_converter(raw, named))


def row_converter(record: dict[str, Any], named: dict[str, Any]) -> RowConverter:
    """Converters for the fields of an Avro record that carry a Connect logical type, and
    every field's Connect schema (the type of a column the target lacks: a new column
    arrives as a new schema version)."""
    columns = []
    fields: dict[str, dict[str, Any]] = {}
    for field in record.get("fields", []):
        convert = field_converter(field["type"], named)
        if convert is not None:
            columns.append((field["name"], _logical_name(field["type"], named), convert))
        connect = connect_schema(field["type"], named)
        if connect is not None:
            fields[field["name"]] = connect
    if not columns and not fields:
        return IDENTITY
    return RowConverter(tuple(columns), fields)


# Avro's primitive types as Connect names them; Connect's narrower integers are kept in
# the schema as `connect.type` (int8, int16) by the Avro converters.
_AVRO_TO_CONNECT = {
    "int": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
    "record": "struct",
}


def connect_schema(avro_type: Any, named: dict[str, Any]) -> dict[str, Any] | None:
    """A field's Connect schema as a dict (`type`, `name`, `parameters`, `items`), as the
    JSON converter sends it; None for a union of several types."""
    resolved = _resolve(avro_type, named)
    if isinstance(resolved, str):
        return {"type": _AVRO_TO_CONNECT.get(resolved, resolved)}
    if not isinstance(resolved, dict):
        return None
    literal = resolved.get("type")
    if not isinstance(literal, str):
        return None
    found: dict[str, Any] = {
        "type": resolved.get("connect.type") or _AVRO_TO_CONNECT.get(literal, literal)
    }
    if resolved.get("connect.name"):
        found["name"] = resolved["connect.name"]
    if resolved.get("connect.parameters"):
        found["parameters"] = resolved["connect.parameters"]
    if literal == "array":
        found["items"] = connect_schema(resolved.get("items"), named)
    return found


def field_converter(avro_type: Any, named: dict[str, Any]) -> Converter | None:
    resolved = _resolve(avro_type, named)
    if not isinstance(resolved, dict):
        return None
    literal = resolved.get("type")
    name = resolved.get("connect.name")
    if literal == "record":
        return variable_scale_decimal if name == VARIABLE_SCALE_DECIMAL else None
    items = field_converter(resolved.get("items"), named) if literal == "array" else None
    literal_name = literal if isinstance(literal, str) else None
    return converter_for(name, resolved.get("connect.parameters"), literal_name, items)


def _logical_name(avro_type: Any, named: dict[str, Any]) -> str:
    resolved = _resolve(avro_type, named)
    if isinstance(resolved, dict):
        return str(resolved.get("connect.name") or resolved.get("type"))
    return str(resolved)


def _resolve(avro_type: Any, named: dict[str, Any]) -> Any:
    """The one non-null member of an optional union, with named references looked up."""
    if isinstance(avro_type, list):
        members = [member for member in avro_type if member != "null"]
        return _resolve(members[0], named) if len(members) == 1 else None
    if isinstance(avro_type, str):
        return named.get(avro_type, avro_type)
    return avro_type


def named_records(
    schema: Any, namespace: str = "", found: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every named record in `schema` by full and short name, for resolving references."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for member in schema:
            named_records(member, namespace, found)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            fullname = _fullname(schema, namespace)
            found[fullname] = schema
            found.setdefault(fullname.rsplit(".", 1)[-1], schema)
            inner = fullname.rsplit(".", 1)[0] if "." in fullname else ""
            for field in schema.get("fields", []):
                named_records(field.get("type"), inner, found)
        elif kind == "array":
            named_records(schema.get("items"), namespace, found)
        elif kind == "map":
            named_records(schema.get("values"), namespace, found)
        elif isinstance(kind, dict | list):
            named_records(kind, namespace, found)
    return found


def _fullname(schema: dict[str, Any], namespace: str) -> str:
    name = str(schema.get("name", ""))
    if "." in name:
        return name
    space = schema.get("namespace", namespace)
    return f"{space}.{name}" if space else name


def envelope_from_record(record: Any) -> debezium.Envelope:
    """A Debezium envelope from the record fastavro read."""
    try:
        return debezium.Envelope(
            op=record["op"],
            source=msgspec.convert(record["source"], debezium.Source),
            before=record.get("before"),
            after=record.get("after"),
            ts_ms=record.get("ts_ms"),
            transaction=msgspec.convert(record.get("transaction"), debezium.Transaction | None),
        )
    except (LookupError, TypeError, AttributeError, msgspec.ValidationError) as exc:
        raise DecodeError(f"invalid Debezium Avro envelope: {exc!r}") from exc


def event_from_record(record: Any) -> ChangeEvent:
    """Our normalised change event from the record fastavro read."""
    try:
        return ChangeEvent(
            table=record["table"],
            op=Op(record["op"]),
            key=record["key"],
            after=record["after"],
            position=SourcePosition(tuple(record["position"])),
            source_ts_ms=record["source_ts_ms"],
            tx=record["tx"],
            unavailable=frozenset(record["unavailable"]),
        )
    except (LookupError, TypeError, ValueError) as exc:
        raise DecodeError(f"invalid {CHANGE_EVENT_NAME} record: {exc!r}") from exc


@functools.cache
def change_event_schema_text() -> str:
    """The text of `schemas/change_event.avsc`, e.g. to register it."""
    return CHANGE_EVENT_SCHEMA_PATH.read_text(encoding="utf-8")


@functools.cache
def change_event_schema() -> Any:
    return fastavro.parse_schema(orjson.loads(change_event_schema_text()))


def encode_change_event(event: ChangeEvent, schema_id: int) -> bytes:
    """`event` as a wire-format message of `io.cdcrecon.ChangeEvent` (tests and benches).

    The schema's value union is null/boolean/long/double/string/bytes: a Decimal or UUID
    is written as its text, a date, time or datetime in ISO-8601; the target column's
    type reads them back.
    """
    record = {
        "table": event.table,
        "op": event.op.value,
        "key": _avro_row(event.key),
        "after": None if event.after is None else _avro_row(event.after),
        "position": list(event.position.parts),
        "source_ts_ms": event.source_ts_ms,
        "tx": event.tx,
        "unavailable": sorted(event.unavailable),
    }
    stream = io.BytesIO()
    stream.write(MAGIC + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(stream, change_event_schema(), record)
    return stream.getvalue()


def _avro_row(row: Any) -> dict[str, Any]:
    return {str(column): _avro_value(value) for column, value in row.items()}


def _avro_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} has no io.cdcrecon.ChangeEvent representation")
