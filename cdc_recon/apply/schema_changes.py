"""Adding a new source column to its target table: the DDL half of `apply.evolve`.

Protocol (one call per batch that meets new columns, on the service's thread, before
the batch is written; promise P7: only mapped tables and quoted names become SQL):

1. one transaction of its own: `lock_timeout` (a target busy with a long batch makes
   this wait at most that long, then the batch is retried: the database is unavailable,
   not the data wrong), an advisory lock per target table (one instance adds a
   column; the others wait, then find it there), then `ALTER TABLE ... ADD COLUMN IF
   NOT EXISTS` per column with the type `evolve.column_type` gives and the source's
   default (a parameter, never SQL text);
2. commit; the applier re-reads the table's shape and maps the batch again.

A crash between 1 and 2 leaves the columns added and the batch unapplied: the next run
reads it again, finds the columns and applies it. A target that refuses the DDL (no
privilege, an unknown type) quarantines the batch's changes that need the column, with
the reason, instead of stopping the stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa

from cdc_recon.apply.evolve import column_type
from cdc_recon.apply.mapping import TableMapper
from cdc_recon.apply.metrics import IGNORED_COLUMNS
from cdc_recon.codecs.logical import ConnectSchema, connect_field_converter
from cdc_recon.config import TableMapping
from cdc_recon.exceptions import MappingError, NewColumns, TransientDatabaseError
from cdc_recon.pg import errors as pg_errors
from cdc_recon.pg.sql import quote_ident, quote_table

LOG = logging.getLogger("cdc_recon.apply")
LOCK_TIMEOUT = "10s"
MAX_IDENTIFIER_BYTES = 63
RECHECK = 60.0  # seconds a refused column stays refused before it is looked at again


class ColumnChanges:
    """The applier's side of `on_new_column`: which mapping a new column belongs to,
    the columns refused (their changes are quarantined with the reason), and the count
    and one log line of each ignored column."""

    def __init__(self, engine: sa.Engine, mappings: Sequence[TableMapping]) -> None:
        self._engine = engine
        self._mappings = mappings
        # (source table, target column) -> why it is not added
        self.refused: dict[tuple[str, str], tuple[str, float]] = {}  # and since when
        self._added: set[tuple[str, str]] = set()
        self._logged: set[tuple[str, str]] = set()

    def refusal(self, new: NewColumns) -> str | None:
        """Why `new` cannot be applied, if one of its columns was refused within the last
        `RECHECK` seconds (then it is looked at again: someone may have added it by hand)."""
        table, now = new.table or "", time.monotonic()
        reasons = []
        for name, _ in new.columns:
            found = self.refused.get((table, name))
            if found is not None and now - found[1] < RECHECK:
                reasons.append(found[0])
        return "; ".join(reasons) if reasons else None

    def add(self, new: NewColumns, existing: Sequence[str]) -> int | None:
        """Add `new`'s columns that may be added; the index of the mapping to reload,
        or None when none was (the others are refused, with the reason)."""
        index = next(i for i, m in enumerate(self._mappings) if m.source == new.table)
        mapping = self._mappings[index]
        present = target_columns(self._engine, mapping.target)
        names = [(mapping.source, name) for name, _ in new.columns]
        if all(name in present for name, _ in new.columns) and self._added.isdisjoint(names):
            self._added.update(names)  # a second time would mean the mapping never sees them
            return index  # added meanwhile (another instance, or by hand): reload only
        wanted = []
        for name, field in new.columns:
            problem = unaddable(name, field, existing)
            if (mapping.source, name) in self._added:
                problem = "it was added, yet the target still lacks it"
            if problem is None:
                wanted.append((name, field))
            else:
                self.refused[mapping.source, name] = (
                    f"cdc-recon does not add column {name!r} to {mapping.target}: {problem}; "
                    "add it by hand, or set on_new_column: ignore",
                    time.monotonic(),
                )
        if not wanted:
            return None
        try:
            add_columns(self._engine, mapping, wanted)
        except MappingError as exc:
            for name, _ in wanted:
                self.refused[mapping.source, name] = (str(exc), time.monotonic())
            return None
        self._added.update((mapping.source, name) for name, _ in wanted)
        return index

    def count_ignored(self, mappers: Iterable[TableMapper]) -> None:
        """`on_new_column: ignore`: each left-out column's changes counted, the first logged."""
        for mapper in mappers:
            table = mapper.shape.table
            for column, count in mapper.ignored.items():
                IGNORED_COLUMNS.labels(table, column).inc(count)
                if (table, column) not in self._logged:
                    self._logged.add((table, column))
                    LOG.warning(
                        "column %s of %s is not written (on_new_column: ignore)",
                        column,
                        mapper.mapping.source,
                    )
            mapper.ignored.clear()


def target_columns(engine: sa.Engine, table: str) -> set[str]:
    """The columns `table` has now."""
    query = sa.text(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:table) "
        "AND attnum > 0 AND NOT attisdropped"
    )
    try:
        with engine.connect() as conn:
            return set(conn.execute(query, {"table": quote_table(table)}).scalars())
    except sa.exc.DBAPIError as exc:
        raise TransientDatabaseError(f"reading the columns of {table}: {exc.orig}") from exc


def unaddable(name: str, field: dict[str, Any] | None, existing: Sequence[str]) -> str | None:
    """Why a new source column is not one to add on its own; None when it is.

    The type must come from the message's schema (a schema-less message cannot tell an
    integer column from a text one), and the name must be one a source plausibly has:
    printable, without quotes, backslashes or surrounding spaces, at most PostgreSQL's
    63 bytes (a longer one would be cut, and never match), and not another case of an
    existing column (`ID` beside `id`). Anything else is more likely a broken or hostile
    producer than a schema change, and a column added is hard to take back.
    """
    if not field:
        return "the message carries no schema to tell its type"
    if (
        not name
        or not name.isprintable()
        or name != name.strip()
        or any(c in name for c in "\"'\\")
    ):
        return "its name has quotes, control characters or surrounding spaces"
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        return f"its name is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes"
    if name.lower() in {column.lower() for column in existing}:
        return "another case of an existing column's name"
    return None


def add_columns(
    engine: sa.Engine, mapping: TableMapping, columns: list[tuple[str, dict[str, Any] | None]]
) -> None:
    """Step 1 for `columns` (target name, Connect field schema or None) of `mapping`'s
    target; `TransientDatabaseError` to retry, `MappingError` when the target refuses."""
    table = quote_table(mapping.target)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            key = {"key": f"cdc_recon.add_column:{mapping.target}"}
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), key)
            for name, field in columns:
                _add(conn, table, mapping.target, name, field)
    except sa.exc.DBAPIError as exc:
        if pg_errors.is_unavailable(exc.orig or exc):
            raise TransientDatabaseError(f"adding columns to {mapping.target}: {exc.orig}") from exc
        raise MappingError(
            f"the target refused new column(s) {[n for n, _ in columns]} for "
            f"{mapping.target}: {pg_errors.reason(exc)}; add them by hand, or set "
            "on_new_column: ignore",
            table=mapping.source,
        ) from exc


def _add(conn: sa.Connection, table: str, target: str, name: str, field: Any) -> None:
    sql_type, note = column_type(field)
    default = _default(field)
    ddl = f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote_ident(name)} {sql_type}"
    if default is None:
        conn.exec_driver_sql(ddl)
    else:  # a parameter: psycopg2 quotes it; a name's % must not read as one
        conn.exec_driver_sql(ddl.replace("%", "%%") + " DEFAULT %(default)s", {"default": default})
    why = f" ({note}: text)" if note else ""
    LOG.warning("added column %s %s to %s for a new source column%s", name, sql_type, target, why)


def _default(field: dict[str, Any] | None) -> Any:
    """The source's default for the column as a Python value, or None (none, or one
    that does not convert: the column is added without it, and the log says so)."""
    if not field or field.get("default") is None:
        return None
    raw = field["default"]
    try:
        convert = connect_field_converter(msgspec.convert(field, ConnectSchema))
        return convert(raw) if convert is not None else raw
    except (msgspec.ValidationError, ValueError, TypeError, ArithmeticError) as exc:
        LOG.warning("the default %r of new column %s is not used: %s", raw, field.get("field"), exc)
        return None
