"""The normalised change event every codec produces, and change identity.

A `ChangeEvent` is format-neutral: Debezium JSON, Avro and the plain seed format all
decode into it (see `cdc_recon.codecs`). The applier never looks at raw messages.

Positions
    `SourcePosition` is an ordered tuple of integers, compared as a tuple, never as a
    string: PostgreSQL `(lsn,)`, MySQL `(binlog file index, pos, row)`, the plain format
    `(timestamp_ms,)`. For PostgreSQL the change LSN alone orders the changes *of one
    key*: two transactions that change the same row are serialised by the row lock, so
    the later one's change record is written after the earlier one commits.

Change identity
    `change_id(table, key_text, tx)`: `table:key:tx`, where `tx` is the 32-bit
    transaction id for PostgreSQL (Debezium's `source.txId`; a trigger's
    `txid_current() & 4294967295`), the GTID or `file:pos` for MySQL, and the event
    timestamp in milliseconds for the plain format. `key_text` is the key's values in
    key-column order as a compact JSON array of strings, which PostgreSQL computes as
    `array_to_json(ARRAY[k1::text, k2::text])::text`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import orjson

MAX_POSITION_PART = 2**63 - 1
TXID_MASK = 0xFFFFFFFF
# Source times the ledger can hold and Python reads back: years 1 to 9999 (UTC).
MIN_SOURCE_TS_MS = -62_135_596_800_000
MAX_SOURCE_TS_MS = 253_402_300_799_999
CONNECTORS = ("postgresql", "mysql", "plain")
"""Families of source positions; positions of two families are never compared."""

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
"""A column the event did not carry (unchanged TOAST, or absent): never overwritten.

It lives with the events, not with the mapping that fills rows with it, because the
COPY encoders of `cdc_recon.pg.sql` (below the applier) write it as NULL."""


class Op(enum.StrEnum):
    """Debezium's operation codes; the plain format's INSERT/UPDATE/DELETE map onto them."""

    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # snapshot read
    TRUNCATE = "t"

    @property
    def writes_row(self) -> bool:
        return self in (Op.CREATE, Op.UPDATE, Op.READ)


class SourcePosition(msgspec.Struct, frozen=True, order=True, gc=False):
    """Where a change sits in its source's log; compared as a tuple of integers."""

    parts: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("a source position needs at least one part")
        for part in self.parts:
            if type(part) is not int or not 0 <= part <= MAX_POSITION_PART:
                raise ValueError(f"position parts are integers in [0, 2**63): {self.parts!r}")

    def __str__(self) -> str:
        return "/".join(str(part) for part in self.parts)


class ChangeEvent(msgspec.Struct, frozen=True, gc=False):
    """One change to one row of a source table, as every codec reports it.

    `key` maps key columns to values (Debezium's message key); a plain-format event with
    a scalar key has `key={"": value}` until the table mapping names the column.
    `after` is the row image after the change (None for deletes and truncates).
    `unavailable` names the columns whose value the source did not send (Debezium's
    unchanged-TOAST placeholder): they must never overwrite the stored value.
    `connector` is the family of `position` (one of `CONNECTORS`): a PostgreSQL LSN, a
    MySQL binlog coordinate and a plain-format timestamp do not order each other, so a
    table is mapped for one family (`TableMapping.connector`).
    """

    table: str
    op: Op
    key: Mapping[str, Any]
    after: Mapping[str, Any] | None
    position: SourcePosition
    source_ts_ms: int
    tx: str | None = None
    unavailable: frozenset[str] = frozenset()
    connector: str = "postgresql"
    # Each after-image column's source type as its codec knows it (a Connect field
    # schema as a dict), when the message carried one: the type of a new column.
    source_types: Mapping[str, Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.table:
            raise ValueError("a change event needs a table")
        if not MIN_SOURCE_TS_MS <= self.source_ts_ms <= MAX_SOURCE_TS_MS:
            raise ValueError(f"source time {self.source_ts_ms} ms is outside years 1-9999")
        if self.after is None and self.op.writes_row:
            raise ValueError(f"op {self.op.value!r} needs a row image")

    def replace(self, **changes: Any) -> ChangeEvent:
        return msgspec.structs.replace(self, **changes)


def canonical_text(value: Any) -> str:
    """A key value as PostgreSQL's `::text` writes it, for the common key types."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def key_text(values: Sequence[Any]) -> str:
    """The key's values, in key-column order, as a compact JSON array of strings."""
    if len(values) == 1 and type(values[0]) is int:  # the usual key, without orjson
        return f'["{values[0]}"]'
    return orjson.dumps([canonical_text(v) for v in values]).decode()


def change_id(table: str, key: str, tx: str) -> str:
    """The identity of one change, computable from the source log and from the ledger."""
    return f"{table}:{key}:{tx}"


def pg_tx(txid: int) -> str:
    """PostgreSQL's transaction marker: the 32-bit xid (epoch bits dropped)."""
    return str(txid & TXID_MASK)


def event_change_id(event: ChangeEvent, key_values: Sequence[Any]) -> str:
    """Change identity of `event` once the mapping has ordered its key values."""
    tx = event.tx if event.tx is not None else str(event.source_ts_ms)
    return change_id(event.table, key_text(key_values), tx)


def key_values(
    key: Mapping[str, Any], columns: Sequence[str], after: Mapping[str, Any] | None = None
) -> tuple[Any, ...]:
    """The key's values in `columns` order; a scalar plain-format key fills one column, and
    a column the message key lacks comes from the row image. `KeyError` when neither has it.
    """
    if len(key) == 1 and "" in key and len(columns) == 1:
        return (key[""],)
    image = after or {}
    return tuple(key[column] if column in key else image[column] for column in columns)
