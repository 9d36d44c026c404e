"""What a table looks like in one database: columns with their types, and its key."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from cdc_recon.exceptions import ConfigError

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, NOT a.attnotnull
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass(%(table)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum"""

_PRIMARY_KEY = """
SELECT a.attname FROM pg_index i
JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = to_regclass(%(table)s) AND i.indisprimary ORDER BY k.n"""

_ESTIMATE = "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%(table)s)"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): "numeric(12,2)", "timestamp with time zone", ...
    base: str  # pg_type.typname: "numeric", "timestamptz", "int8", ...
    nullable: bool


@dataclass(frozen=True)
class TableShape:
    table: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    estimated_rows: int

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise ConfigError(f"config: reconcile: {self.table} has no column {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


def _regclass_name(table: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split(".", 1))


def read_shape(engine: sa.Engine, table: str, *, side: str) -> TableShape:
    """The shape of `table` in `engine`'s database; `ConfigError` when it does not exist."""
    params = {"table": _regclass_name(table)}
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(_COLUMNS, params).all()
        key = conn.exec_driver_sql(_PRIMARY_KEY, params).scalars().all()
        estimate = conn.exec_driver_sql(_ESTIMATE, params).scalar()
    if not rows:
        raise ConfigError(f"config: reconcile: table {table} does not exist in the {side}")
    return TableShape(
        table=table,
        columns=tuple(Column(r[0], r[1], r[2], bool(r[3])) for r in rows),
        primary_key=tuple(key),
        estimated_rows=int(estimate or 0),
    )
