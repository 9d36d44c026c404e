"""Source schema changes: a new source column becomes a target column (pure, no I/O).

Per mapped table, `on_new_column` says what a change carrying a column the target lacks
does (after `rename`, `include` and `exclude`, which apply to new columns too):

- `add` (default): the applier adds the column to the target, once, under an advisory
  lock, with `ADD COLUMN IF NOT EXISTS` (so concurrent instances, and a restart between
  the DDL and the batch, add it once), of the type the message's Connect schema gives
  (`column_type` below, with the schema's default), then re-reads the table's shape and
  maps the batch again. A type it cannot tell (no schema in the message, or a logical
  type it does not know) becomes `text`, and a log line says so;
- `ignore`: the column is left out of the write, counted in
  `cdc_recon_ignored_columns_total{table,column}`, logged once;
- `quarantine`: the change is quarantined (`unmapped`), as before this setting existed.

A dropped source column needs nothing: changes simply stop carrying it and the target
keeps its values (a column the target keeps NOT NULL without a default then refuses new
rows: those are `rejected`, with what to do in the reason).

    >>> column_type({"type": "int64"})
    ('bigint', None)
    >>> column_type({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
    ...              "parameters": {"scale": "2", "connect.decimal.precision": "12"}})
    ('numeric(12,2)', None)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cdc_recon.codecs.logical import (
    CONNECT_DATE,
    CONNECT_DECIMAL,
    CONNECT_TIME,
    CONNECT_TIMESTAMP,
    DEBEZIUM_DATE,
    DEBEZIUM_JSON,
    DEBEZIUM_TIME,
    DEBEZIUM_TIMESTAMP,
    DEBEZIUM_UUID,
    MICRO_TIME,
    MICRO_TIMESTAMP,
    NANO_TIME,
    NANO_TIMESTAMP,
    VARIABLE_SCALE_DECIMAL,
    ZONED_TIME,
    ZONED_TIMESTAMP,
)

POLICIES = ("add", "ignore", "quarantine")
_PRIMITIVE = {
    "int8": "smallint",
    "int16": "smallint",
    "int32": "integer",
    "int64": "bigint",
    "float32": "real",
    "float64": "double precision",
    "boolean": "boolean",
    "string": "text",
    "bytes": "bytea",
}
_LOGICAL = {
    VARIABLE_SCALE_DECIMAL: "numeric",
    DEBEZIUM_DATE: "date",
    CONNECT_DATE: "date",
    DEBEZIUM_TIME: "time",
    CONNECT_TIME: "time",
    MICRO_TIME: "time",
    NANO_TIME: "time",
    ZONED_TIME: "time with time zone",
    DEBEZIUM_TIMESTAMP: "timestamp",
    CONNECT_TIMESTAMP: "timestamp",
    MICRO_TIMESTAMP: "timestamp",
    NANO_TIMESTAMP: "timestamp",
    ZONED_TIMESTAMP: "timestamp with time zone",
    DEBEZIUM_JSON: "jsonb",
    DEBEZIUM_UUID: "uuid",
    "io.debezium.data.Enum": "text",
    "io.debezium.data.EnumSet": "text",
    "io.debezium.data.Xml": "xml",
    "io.debezium.data.Bits": "bytea",
}


def column_type(field: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """The target type for a Connect field schema, and a note when it was a guess."""
    if not field:
        return "text", "the message carries no schema for it"
    name, kind = field.get("name"), field.get("type")
    if name == CONNECT_DECIMAL:
        parameters = field.get("parameters") or {}
        scale, precision = parameters.get("scale"), parameters.get("connect.decimal.precision")
        if scale is not None and precision is not None:
            return f"numeric({int(precision)},{int(scale)})", None
        return "numeric", None
    if name in _LOGICAL:
        return _LOGICAL[name], None
    if kind == "array":
        inner, note = column_type(field.get("items"))
        return f"{inner}[]", note
    if name is None and kind in _PRIMITIVE:
        return _PRIMITIVE[kind], None
    return "text", f"its source type {name or kind!r} is not one cdc-recon maps"
