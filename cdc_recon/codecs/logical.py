"""Debezium and Kafka Connect logical types turned into Python values.

A Debezium message says what a column's value means in its schema, not in the value:
`{"type": "int32", "name": "io.debezium.time.Date"}` makes `19000` a date. The JSON
converter (`schemas.enable=true`) sends that schema inline; the Avro converter keeps it in
the registry as `connect.name` / `connect.parameters`. Either way the schema is the same
for every message of a table, so a `RowConverter` is built once per schema and cached:
`value_converter(schema_json)` / `key_converter(schema_json)` are keyed on the raw schema
bytes, and the Avro decoder keeps its own per schema id.

Without a schema (`schemas.enable=false`) values pass through unchanged: the JSON alone
cannot tell a base64 decimal from a text column. A value Python cannot represent (a
PostgreSQL `infinity` timestamp, a `24:00:00` time) raises `DecodeError` naming the column,
so the message is quarantined rather than written wrong.

    >>> convert = connect_row_converter(ConnectSchema(type="struct", fields=[
    ...     ConnectSchema(type="int32", field="born", name=DEBEZIUM_DATE)]))
    >>> convert({"born": 1})
    {'born': datetime.date(1970, 1, 2)}
"""

from __future__ import annotations

import binascii
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any

import msgspec

from cdc_recon.exceptions import DecodeError
from cdc_recon.fit import instant_problem, zoned_timestamp_problem

Converter = Callable[[Any], Any]

CONNECT_DECIMAL = "org.apache.kafka.connect.data.Decimal"
CONNECT_DATE = "org.apache.kafka.connect.data.Date"
CONNECT_TIME = "org.apache.kafka.connect.data.Time"
CONNECT_TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"
VARIABLE_SCALE_DECIMAL = "io.debezium.data.VariableScaleDecimal"
DEBEZIUM_DATE = "io.debezium.time.Date"
DEBEZIUM_TIME = "io.debezium.time.Time"
MICRO_TIME = "io.debezium.time.MicroTime"
NANO_TIME = "io.debezium.time.NanoTime"
DEBEZIUM_TIMESTAMP = "io.debezium.time.Timestamp"
MICRO_TIMESTAMP = "io.debezium.time.MicroTimestamp"
NANO_TIMESTAMP = "io.debezium.time.NanoTimestamp"
ZONED_TIMESTAMP = "io.debezium.time.ZonedTimestamp"
ZONED_TIME = "io.debezium.time.ZonedTime"
DEBEZIUM_UUID = "io.debezium.data.Uuid"
DEBEZIUM_JSON = "io.debezium.data.Json"

_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
EPOCH = dt.datetime(1970, 1, 1)
CACHED_SCHEMAS = 512
MIN_SCALE, MAX_SCALE = -1000, 1000  # PostgreSQL's numeric scales


class ConnectSchema(msgspec.Struct, frozen=True):
    """A Kafka Connect schema as the JSON converter writes it (only what decoding needs)."""

    type: str
    name: str | None = None
    parameters: dict[str, Any] | None = None
    fields: list[ConnectSchema] | None = None
    items: ConnectSchema | None = None
    field: str | None = None
    default: Any = None


class RowConverter:
    """Converts the logical-typed columns of a row image in place; others are untouched.

    Built once per schema: only the columns that need a conversion are visited.
    `fields` keeps each column's Connect schema (as a dict) for the applier's schema
    evolution (`cdc_recon.apply.evolve`): the type of a column the target lacks.
    """

    __slots__ = ("columns", "fields")

    def __init__(
        self,
        columns: tuple[tuple[str, str, Converter], ...] = (),
        fields: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.columns = columns
        self.fields = fields

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        get = row.get
        for column, logical, convert in self.columns:
            value = get(column)
            if value is not None:
                try:
                    row[column] = convert(value)
                except (ValueError, TypeError, LookupError, ArithmeticError) as exc:
                    raise DecodeError(
                        f"column {column!r}: {value!r} is not a valid {logical} ({exc})"
                    ) from exc
        return row


IDENTITY = RowConverter()


def to_decimal(literal: str | None, scale: int) -> Converter:
    """Connect `Decimal`: base64 (JSON) or raw (Avro) big-endian two's complement bytes.

    A JSON number (`decimal.format=NUMERIC`) or a decimal string is taken as it is when
    it has at most `scale` decimal places (never rounded), and an already converted
    `Decimal` (fastavro's `decimal` logical type) passes through.
    """
    exponent = Decimal(1).scaleb(-scale)

    def convert(value: Any) -> Decimal:
        if type(value) is str:
            if literal == "bytes":
                return _unscaled(from_base64(value), scale)
            return Decimal(value)
        if isinstance(value, Decimal):
            return value
        if isinstance(value, bytes):
            return _unscaled(value, scale)
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
            exact = number.quantize(exponent, context=_EXACT)
            if exact != number:
                raise ValueError(f"has more than {scale} decimal places")
            return exact
        raise TypeError(f"unexpected {type(value).__name__}")

    return convert


def from_base64(text: str) -> bytes:
    """Bytes from base64 as Kafka Connect writes it: canonical, padded, nothing else
    (strict decoding alone takes `Zm9v=`, a byte too many, for `foo`)."""
    raw = binascii.a2b_base64(text, strict_mode=True)
    if binascii.b2a_base64(raw, newline=False) != text.encode():
        raise ValueError("not canonical base64")
    return raw


def _unscaled(raw: bytes, scale: int) -> Decimal:
    if not raw:
        raise ValueError("no bytes: an unscaled value has at least one")
    # scaleb in an unbounded context: the default one would round to 28 digits
    return Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale, _EXACT)


def decimal_scale(parameters: Mapping[str, Any] | None) -> int:
    """A Connect Decimal's `scale` parameter: required (the bytes mean nothing without
    it), an integer (JSON text of one, as the converter writes it) within PostgreSQL's
    numeric scales."""
    scale = (parameters or {}).get("scale")
    if scale is None:
        raise DecodeError("Decimal schema without a scale parameter")
    try:
        number = int(scale) if type(scale) is str else scale
    except ValueError:
        number = None
    if type(number) is not int or not MIN_SCALE <= number <= MAX_SCALE:
        raise DecodeError(f"Decimal schema with an invalid scale {scale!r}")
    return number


def variable_scale_decimal(value: Any) -> Decimal:
    """Debezium's `VariableScaleDecimal`: a struct `{scale, value}` of unscaled bytes."""
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"expected a struct, got {type(value).__name__}")
    scale, raw = value["scale"], value["value"]
    if type(scale) is not int or not MIN_SCALE <= scale <= MAX_SCALE:
        raise ValueError(f"scale must be an integer in [{MIN_SCALE}, {MAX_SCALE}]")
    if isinstance(raw, str):
        raw = from_base64(raw)
    if not isinstance(raw, bytes):
        raise TypeError("value must be bytes")
    return _unscaled(raw, scale)


def days_to_date(value: Any) -> dt.date:
    if type(value) is int:
        return dt.date.fromordinal(EPOCH_ORDINAL + value)
    if isinstance(value, dt.date):
        return value
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def time_of_day(per_second: int) -> Converter:
    """A time since midnight in 1/`per_second` units; PostgreSQL's 24:00 does not fit."""

    def convert(value: Any) -> dt.time:
        if isinstance(value, dt.time):
            return value
        micros = _integer(value) * 1_000_000 // per_second
        if not 0 <= micros < 86_400_000_000:
            raise ValueError("time of day out of range")
        return (EPOCH + dt.timedelta(0, 0, micros)).time()

    return convert


def since_epoch(per_second: int) -> Converter:
    """A naive (UTC) timestamp since the epoch in 1/`per_second` units; ns are truncated."""
    to_micros = 1_000_000 // per_second if per_second <= 1_000_000 else 0
    from_nanos = per_second // 1_000_000

    def convert(value: Any) -> dt.datetime:
        if type(value) is int:
            micros = value * to_micros if to_micros else value // from_nanos
            return EPOCH + dt.timedelta(0, 0, micros)
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
        raise TypeError(f"expected an integer, got {type(value).__name__}")

    return convert


def zoned_timestamp(value: Any) -> dt.datetime:
    """Debezium's ISO_OFFSET_DATE_TIME text: a full time and an offset, nothing looser
    (a date alone, a missing zone or a week date would be guessed at, not read)."""
    if isinstance(value, dt.datetime):
        problem = instant_problem(value)
    else:
        problem = zoned_timestamp_problem(_text(value))
    if problem is not None:
        raise ValueError(problem)
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def zoned_time(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value
    return dt.time.fromisoformat(_text(value))


def to_bytes(value: Any) -> bytes:
    """A Connect `bytes` value: base64 in JSON, raw in Avro."""
    if type(value) is str:
        return from_base64(value)
    if isinstance(value, bytes):
        return value
    raise TypeError(f"expected base64 text, got {type(value).__name__}")


def to_uuid(value: Any) -> uuid.UUID:
    if type(value) is str:
        return msgspec.convert(value, uuid.UUID)  # 3x faster than uuid.UUID(value)
    if isinstance(value, uuid.UUID):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _integer(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


_SIMPLE: dict[str, Converter] = {
    VARIABLE_SCALE_DECIMAL: variable_scale_decimal,
    DEBEZIUM_DATE: days_to_date,
    CONNECT_DATE: days_to_date,
    DEBEZIUM_TIME: time_of_day(1_000),
    CONNECT_TIME: time_of_day(1_000),
    MICRO_TIME: time_of_day(1_000_000),
    NANO_TIME: time_of_day(1_000_000_000),
    DEBEZIUM_TIMESTAMP: since_epoch(1_000),
    CONNECT_TIMESTAMP: since_epoch(1_000),
    MICRO_TIMESTAMP: since_epoch(1_000_000),
    NANO_TIMESTAMP: since_epoch(1_000_000_000),
    ZONED_TIMESTAMP: zoned_timestamp,
    ZONED_TIME: zoned_time,
    DEBEZIUM_UUID: to_uuid,
}


def converter_for(
    name: str | None,
    parameters: Mapping[str, Any] | None,
    literal: str | None,
    items: Converter | None = None,
) -> Converter | None:
    """The converter for one field's logical type, or None when the value stays as it is.

    `literal` is the schema's own type (`bytes`, `string`, `array`...); for an array,
    `items` converts its elements. Other `bytes` fields (bytea, `io.debezium.data.Bits`)
    become `bytes`. `io.debezium.data.Json` stays JSON text: the target column is
    json/jsonb and takes the text as it is.
    """
    if literal == "array":
        return None if items is None else _each(items)
    if name == CONNECT_DECIMAL:
        return to_decimal(literal, decimal_scale(parameters))
    convert = _SIMPLE.get(name) if name is not None else None
    if convert is None and literal == "bytes":
        return to_bytes
    return convert


def _each(convert: Converter) -> Converter:
    def convert_all(values: Any) -> list[Any]:
        if not isinstance(values, list):
            raise TypeError(f"expected an array, got {type(values).__name__}")
        return [None if value is None else convert(value) for value in values]

    return convert_all


def connect_field_converter(schema: ConnectSchema) -> Converter | None:
    items = connect_field_converter(schema.items) if schema.items is not None else None
    return converter_for(schema.name, schema.parameters, schema.type, items)


def connect_row_converter(struct: ConnectSchema | None, *, fields: bool = False) -> RowConverter:
    """The converter for the row described by a Connect `struct` schema; with `fields`,
    it keeps each column's schema too."""
    if struct is None or not struct.fields:
        return IDENTITY
    columns = []
    for field in struct.fields:
        convert = connect_field_converter(field)
        if convert is not None and field.field is not None:
            columns.append((field.field, field.name or field.type, convert))
    if fields:
        kept = {f.field: msgspec.structs.asdict(f) for f in struct.fields if f.field}
        return RowConverter(tuple(columns), kept)
    return RowConverter(tuple(columns)) if columns else IDENTITY


_SCHEMA_DECODER: msgspec.json.Decoder[ConnectSchema | None] = msgspec.json.Decoder(
    ConnectSchema | None
)


def parse_connect_schema(schema_json: bytes) -> ConnectSchema | None:
    try:
        return _SCHEMA_DECODER.decode(schema_json)
    except msgspec.MsgspecError as exc:
        raise DecodeError(f"malformed Connect schema: {exc}") from exc


class SchemaCache:
    """Row converters by their schema's raw JSON, compared byte for byte.

    The same few kilobytes of schema arrive with every message; comparing them with the
    cached copies of the same length costs a memcmp, where hashing them would cost a full
    pass in Python's hash. Bounded: past `maxsize` schemas the cache starts over.
    """

    def __init__(self, build: Callable[[bytes], RowConverter], maxsize: int = CACHED_SCHEMAS):
        self._build = build
        self._maxsize = maxsize
        self._size = 0
        self._by_length: dict[int, list[tuple[msgspec.Raw, RowConverter]]] = {}

    def __call__(self, schema_json: msgspec.Raw) -> RowConverter:
        bucket = self._by_length.get(len(schema_json))
        if bucket is not None:
            for known, convert in bucket:
                if known == schema_json:
                    return convert
        convert = self._build(bytes(schema_json))
        if self._size >= self._maxsize:
            self._by_length.clear()
            self._size = 0
        self._by_length.setdefault(len(schema_json), []).append((schema_json.copy(), convert))
        self._size += 1
        return convert

    def __len__(self) -> int:
        return self._size


def build_value_converter(schema_json: bytes) -> RowConverter:
    """The `after` image's converter for a Debezium envelope schema."""
    envelope = parse_connect_schema(schema_json)
    for field in (envelope.fields or []) if envelope is not None else []:
        if field.field == "after":
            return connect_row_converter(field, fields=True)
    return IDENTITY


def build_key_converter(schema_json: bytes) -> RowConverter:
    """The converter for a Debezium message key's schema."""
    return connect_row_converter(parse_connect_schema(schema_json))


value_converter = SchemaCache(build_value_converter)
key_converter = SchemaCache(build_key_converter)
