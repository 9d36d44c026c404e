"""SQL of the non-checksum checks: counts by group, orphans, future times, rule queries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from cdc_recon.pg.sql import quote_ident, quote_table
from cdc_recon.reconcile.catalog import TableShape
from cdc_recon.reconcile.dialects import by_name
from cdc_recon.reconcile.expressions import Params, normalised

ORPHANS_SHOWN = 20


def group_counts(
    conn: sa.Connection,
    shape: TableShape,
    columns: Sequence[str],
    bucket: tuple[str, str] | None = None,
    families: Sequence[str] | None = None,
) -> dict[tuple[str | None, ...], int]:
    """Row counts per group of `columns` (and per `bucket` = (column, unit) of time);
    across engines, `families` name each group column's canonical family."""
    if families is not None:
        return _canonical_counts(conn, shape, columns, bucket, families)
    params = Params()
    groups = [f"({normalised(quote_ident(c), shape.column(c).base)})::text" for c in columns]
    if bucket is not None:
        column, unit = bucket
        value = normalised(quote_ident(column), shape.column(column).base)
        groups.append(f"date_trunc({params.add(unit)}, {value})::date::text")
    if not groups:
        sql = f"SELECT count(*) FROM {quote_table(shape.table)}"
        return {(): int(conn.exec_driver_sql(sql).scalar_one())}
    listed = ", ".join(groups)
    positions = ", ".join(str(i + 1) for i in range(len(groups)))
    sql = f"SELECT {listed}, count(*) FROM {quote_table(shape.table)} GROUP BY {positions}"
    return {tuple(row[:-1]): int(row[-1]) for row in conn.exec_driver_sql(sql, params).all()}


def _canonical_counts(
    conn: sa.Connection,
    shape: TableShape,
    columns: Sequence[str],
    bucket: tuple[str, str] | None,
    families: Sequence[str],
) -> dict[tuple[str | None, ...], int]:
    dialect = by_name(shape.engine)
    table = dialect.quote_table(shape.table)
    groups = [
        dialect.canonical(dialect.quote_ident(c), shape.column(c), f)
        for c, f in zip(columns, families, strict=True)
    ]
    if bucket is not None:
        column, unit = bucket
        groups.append(dialect.day_of(dialect.quote_ident(column), shape.column(column), unit))
    if not groups:
        return {(): int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())}
    positions = ", ".join(str(i + 1) for i in range(len(groups)))
    sql = f"SELECT {', '.join(groups)}, count(*) FROM {table} GROUP BY {positions}"
    return {tuple(row[:-1]): int(row[-1]) for row in conn.exec_driver_sql(sql).all()}


def orphans(
    conn: sa.Connection,
    table: str,
    columns: Sequence[str],
    references: str,
    ref_columns: Sequence[str],
) -> tuple[int, list[str]]:
    """Rows of `table` whose non-null `columns` match no row of `references`:
    their count and the first few referencing values (JSON texts)."""
    child = ", ".join(f"c.{quote_ident(c)}" for c in columns)
    match = " AND ".join(
        f"p.{quote_ident(r)} = c.{quote_ident(c)}"
        for c, r in zip(columns, ref_columns, strict=True)
    )
    not_null = " AND ".join(f"c.{quote_ident(c)} IS NOT NULL" for c in columns)
    base = (
        f"FROM {quote_table(table)} c WHERE {not_null} AND NOT EXISTS "
        f"(SELECT 1 FROM {quote_table(references)} p WHERE {match})"
    )
    count = int(conn.exec_driver_sql(f"SELECT count(*) {base}").scalar_one())
    shown = conn.exec_driver_sql(
        f"SELECT DISTINCT json_build_array({child})::text {base} LIMIT {ORPHANS_SHOWN}"
    ).scalars()
    return count, sorted(shown)


def future_rows(
    conn: sa.Connection, shape: TableShape, column: str, tolerance_s: float
) -> tuple[int, dt.datetime | None]:
    """Rows whose `column` lies more than `tolerance_s` seconds in the future, and the max."""
    params = Params()
    ahead = params.add(dt.timedelta(seconds=tolerance_s))
    value = quote_ident(column)
    if shape.column(column).base == "timestamp":
        value = f"({value} AT TIME ZONE 'UTC')"
    sql = (
        f"SELECT count(*), max({value}) FROM {quote_table(shape.table)} "
        f"WHERE {value} > now() + {ahead}"
    )
    count, latest = conn.exec_driver_sql(sql, params).one()
    return int(count), latest


def rule_rows(conn: sa.Connection, query: str) -> list[tuple[Any, ...]]:
    """The rows of an operator's rule query, in a read-only transaction.

    The query is configuration written by the operator, run as given; READ ONLY keeps
    a mistaken rule from writing.
    """
    with conn.begin():
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        return [tuple(row) for row in conn.exec_driver_sql(query.replace("%", "%%")).all()]
