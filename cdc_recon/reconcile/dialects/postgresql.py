"""PostgreSQL as a side of a reconciliation: sessions, quoting, catalog, canonical forms.

Against another PostgreSQL the comparison uses `expressions.py`'s typed hashes
(`fast64`, `md5`); against another engine, the canonical texts of `canonical.py`,
written here as PostgreSQL computes them:

    int        c::text                      numeric    trim_scale(c)::text
    timestamp  to_char(c AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
    date       to_char(c, 'YYYY-MM-DD')     bool       CASE WHEN c THEN 't' WHEN NOT c ..
    uuid       lower(c::text)               bytes      encode(c, 'hex')
    text       c::text                      json/float c::jsonb::text / c::text (fetched)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from cdc_recon.exceptions import ConfigError
from cdc_recon.pg.engine import create_engine
from cdc_recon.pg.sql import quote_ident, quote_table
from cdc_recon.reconcile.dialects.base import Column, Params, TableShape
from cdc_recon.reconcile.dialects.canonical import NULL

# Every reconciliation session prints values the same way, whatever the server defaults.
SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres "
    "-c bytea_output=hex -c extra_float_digits=1"
)

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

_FAMILY = {
    "int2": "int", "int4": "int", "int8": "int", "numeric": "numeric",
    "float4": "float", "float8": "float", "bool": "bool", "uuid": "uuid",
    "timestamptz": "timestamp", "timestamp": "timestamp", "date": "date",
    "json": "json", "jsonb": "json", "bytea": "bytes",
}  # fmt: skip
_MICROS = "'YYYY-MM-DD HH24:MI:SS.US'"


def _regclass_name(table: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split(".", 1))


class PostgreSql:
    name = "postgresql"

    def engine(self, url: Any, *, name: str, workers: int) -> sa.Engine:
        return create_engine(
            url, name=name, pool_size=workers + 1, connect_args={"options": SESSION_OPTIONS}
        )

    def quote_ident(self, name: str) -> str:
        return quote_ident(name)

    def quote_table(self, table: str, engine_db: str | None = None) -> str:
        return quote_table(table)

    def read_shape(self, engine: sa.Engine, table: str, *, side: str) -> TableShape:
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

    def family(self, column: Column) -> str:
        if column.base == "numeric" and column.type.endswith(",0)"):
            return "int"  # numeric(20,0): the target of an unsigned BIGINT
        return _FAMILY.get(column.base, "text")

    def canonical(self, column_sql: str, column: Column, family: str) -> str:
        c, base = column_sql, column.base
        if family in ("int", "numeric"):
            return f"trim_scale({c})::text" if base == "numeric" else f"({c})::text"
        if family in ("timestamp", "date"):
            utc = f"({c} AT TIME ZONE 'UTC')" if base in ("timestamptz", "text") else c
            if base == "text":
                utc = f"(({c})::timestamptz AT TIME ZONE 'UTC')"
            return f"to_char({utc}, {_MICROS if family == 'timestamp' else repr('YYYY-MM-DD')})"
        if family == "bool":
            truth = c if base == "bool" else f"({c})::numeric <> 0"
            return f"CASE WHEN {truth} THEN 't' WHEN NOT {truth} THEN 'f' END"
        if family == "uuid":
            return f"lower(({c})::text)"
        if family == "bytes":
            raw = c if base == "bytea" else f"convert_to(({c})::text, 'UTF8')"
            return f"encode({raw}, 'hex')"
        if family == "json":
            return f"({c})::jsonb::text"
        return f"({c})::text"

    def day_of(self, column_sql: str, column: Column, unit: str) -> str:
        utc = f"({column_sql} AT TIME ZONE 'UTC')" if column.base == "timestamptz" else column_sql
        return f"to_char(date_trunc('{_unit(unit)}', {utc}), 'YYYY-MM-DD')"

    def image_value(self, column_sql: str, column: Column, family: str) -> str:
        return column_sql

    def row_image(self, pairs: Sequence[tuple[str, str]]) -> str:
        chunks = [pairs[i : i + 40] for i in range(0, len(pairs), 40)]  # 100 arguments at most
        built = [
            "jsonb_build_object(" + ", ".join(f"{k}::text, {v}" for k, v in chunk) + ")"
            for chunk in chunks
        ]
        return f"({' || '.join(built) or repr('{}') + '::jsonb'})::text"

    def row_hash(self, texts: Sequence[tuple[str, bool]]) -> str:
        parts = [
            f"coalesce(length({t}) || ':' || {t}, '{NULL}')"
            if prefix
            else f"coalesce({t}, '{NULL}')"
            for t, prefix in texts
        ]
        joined = " || ',' || ".join(parts) or "''"
        return f"('x' || substr(md5({joined}), 1, 16))::bit(64)::bigint"

    def key_text(self, texts: Sequence[str]) -> str:
        return f"json_build_array({', '.join(texts)})::text"

    def sum_text(self, expression: str) -> str:
        return f"sum({expression})::text"

    def as_text(self, expression: str) -> str:
        return f"({expression})::text"

    def bucket(
        self, key_sql: str, key_type: str, integer: bool, thresholds: Sequence[Any], params: Params
    ) -> str | None:
        return f"width_bucket({key_sql}, {params.add(list(thresholds))}::{key_type}[])"

    def first_level_buckets(self, integer: bool, wanted: int) -> int:
        return wanted

    def prepare_checksum(self, conn: sa.Connection) -> None:
        # The planner expects a group per row and would sort the range; a hash suffices.
        conn.exec_driver_sql("SET LOCAL enable_sort = off")

    def sample(self, table_sql: str, key_sql: str, limit: str, percent: str | None) -> str:
        sampled = f" TABLESAMPLE BERNOULLI ({percent})" if percent else ""
        return f"SELECT {key_sql} FROM {table_sql}{sampled} ORDER BY random() LIMIT {limit}"


def _unit(unit: str) -> str:
    if unit not in ("hour", "day", "week", "month", "year"):
        raise ValueError(f"not a date bucket unit: {unit!r}")
    return unit


POSTGRESQL = PostgreSql()
