"""Source-vs-target comparison, row for row and column for column, for end-to-end tests.

Reads both tables whole (keyed by their primary key), normalises each value so that
equal data compares equal whatever path it took (numeric scale, time zone, jsonb key
order, uuid/bytes representations) and reports every missing, extra and changed row.

    >>> diff = compare_tables(source_engine, "shop.orders", target_engine, "copy.orders")
    ...                                                                   # doctest: +SKIP
    >>> diff.ok, diff.summary()                                           # doctest: +SKIP
    (True, 'shop.orders -> copy.orders: 1532 rows, equal')

`compare_schemas` does it for several tables, e.g. the workload's five. From a shell
(the demo), from the checkout's root:

    $ python -m tests.e2e.compare SOURCE_URL TARGET_URL SOURCE_SCHEMA TARGET_SCHEMA [TABLE ...]

prints one line per table and exits 0 when all are equal, 1 otherwise (the tables
default to the workload's five).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

Key = tuple[Any, ...]
Row = dict[str, Any]
SHOWN = 5  # differences of each kind named in a summary


def normalise(value: Any) -> Any:
    """A value in a canonical form: two representations of one datum become equal."""
    if isinstance(value, Decimal):
        return value.normalize() if value.is_finite() else value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC) if value.tzinfo is not None else value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


@dataclass(frozen=True)
class TableDiff:
    """What differs between one source table and its target copy."""

    source: str
    target: str
    rows: int  # in the source
    missing: tuple[Key, ...] = ()  # in the source, not in the target
    extra: tuple[Key, ...] = ()  # in the target, not in the source
    changed: tuple[tuple[Key, dict[str, tuple[Any, Any]]], ...] = ()  # key, column: (src, tgt)
    columns_missing: tuple[str, ...] = ()  # source columns the target lacks

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.columns_missing)

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.changed)

    def summary(self) -> str:
        head = f"{self.source} -> {self.target}: {self.rows} rows"
        if self.ok:
            return f"{head}, equal"
        parts = [f"{head}, {self.differences} differences"]
        if self.columns_missing:
            parts.append(f"target lacks columns {list(self.columns_missing)}")
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {list(self.missing[:SHOWN])}")
        if self.extra:
            parts.append(f"extra {len(self.extra)}: {list(self.extra[:SHOWN])}")
        for key, columns in self.changed[:SHOWN]:
            shown = {c: (_short(s), _short(t)) for c, (s, t) in columns.items()}
            parts.append(f"changed {key}: {shown}")
        return "; ".join(parts)


@dataclass(frozen=True)
class SchemaDiff:
    """The diffs of several tables; `ok` when every one is equal."""

    tables: tuple[TableDiff, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(diff.ok for diff in self.tables)

    @property
    def differences(self) -> int:
        return sum(diff.differences for diff in self.tables)

    @property
    def rows(self) -> int:
        return sum(diff.rows for diff in self.tables)

    def summary(self) -> str:
        return "\n".join(diff.summary() for diff in self.tables)


def _short(value: Any, limit: int = 60) -> Any:
    text = repr(value)
    return value if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def _quoted(table: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split(".", 1))


def primary_key(conn: sa.Connection, table: str) -> tuple[str, ...]:
    found = conn.execute(
        sa.text(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)"
        ),
        {"t": _quoted(table)},
    )
    key = tuple(row[0] for row in found)
    if not key:
        raise ValueError(f"{table} has no primary key to compare rows by")
    return key


def read_rows(engine: sa.Engine, table: str, key: Sequence[str] | None = None) -> dict[Key, Row]:
    """Every row of `table`, normalised, by its key (the primary key unless given)."""
    with engine.connect() as conn:
        conn.execute(sa.text("SET TIME ZONE 'UTC'"))
        columns = tuple(key) if key else primary_key(conn, table)
        result = conn.execute(sa.text(f"SELECT * FROM {_quoted(table)}"))
        names = list(result.keys())
        rows: dict[Key, Row] = {}
        for values in result:
            row = {name: normalise(value) for name, value in zip(names, values, strict=True)}
            rows[tuple(row[c] for c in columns)] = row
    return rows


def diff_rows(
    source: Mapping[Key, Row], target: Mapping[Key, Row], *, names: tuple[str, str] = ("", "")
) -> TableDiff:
    """Pure: the differences of two keyed row sets (source columns are the reference)."""
    columns = next(iter(source.values())).keys() if source else ()
    target_columns = next(iter(target.values())).keys() if target else columns
    lacking = tuple(c for c in columns if c not in target_columns)
    changed = []
    for key in sorted(source.keys() & target.keys(), key=repr):
        src, tgt = source[key], target[key]
        delta = {
            c: (src[c], tgt.get(c)) for c in columns if c not in lacking and src[c] != tgt.get(c)
        }
        if delta:
            changed.append((key, delta))
    return TableDiff(
        source=names[0],
        target=names[1],
        rows=len(source),
        missing=tuple(sorted(source.keys() - target.keys(), key=repr)),
        extra=tuple(sorted(target.keys() - source.keys(), key=repr)),
        changed=tuple(changed),
        columns_missing=lacking,
    )


def compare_tables(
    source_engine: sa.Engine,
    source_table: str,
    target_engine: sa.Engine,
    target_table: str,
    key: Sequence[str] | None = None,
) -> TableDiff:
    """Compare `source_table` (schema.table) with `target_table`, row for row."""
    source = read_rows(source_engine, source_table, key)
    target = read_rows(target_engine, target_table, key)
    return diff_rows(source, target, names=(source_table, target_table))


def compare_schemas(
    source_engine: sa.Engine,
    target_engine: sa.Engine,
    pairs: Iterable[tuple[str, str]],
) -> SchemaDiff:
    """`compare_tables` for each (source table, target table) pair."""
    return SchemaDiff(tuple(compare_tables(source_engine, s, target_engine, t) for s, t in pairs))


def main(argv: Sequence[str]) -> int:
    from cdc_recon.pg.engine import create_engine
    from cdc_recon.workload import TABLES

    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    source_url, target_url, source_schema, target_schema, *names = argv
    names = names or [table.name for table in TABLES]
    source, target = create_engine(source_url), create_engine(target_url)
    try:
        pairs = [(f"{source_schema}.{n}", f"{target_schema}.{n}") for n in names]
        diff = compare_schemas(source, target, pairs)
    finally:
        source.dispose()
        target.dispose()
    print(diff.summary())
    print(f"{diff.rows} source rows, {diff.differences} differences")
    return 0 if diff.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
