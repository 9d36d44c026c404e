"""What reconciliation asks of a database engine: the `Dialect` protocol, and the
catalog's view of a table that every dialect returns.

A dialect is one module per engine (`postgresql.py`, `mariadb.py`) holding its quoting,
its catalog queries, its type families and the canonical text expression of each
family (see `canonical.py` for the forms themselves). Checks never branch on the
engine: they ask the side's dialect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa

from cdc_recon.exceptions import ConfigError

KeyValues = tuple[Any, ...]


class Params(dict[str, Any]):
    """Bound parameters of one statement; `add` returns the pyformat placeholder."""

    def add(self, value: Any) -> str:
        name = f"p{len(self)}"
        self[name] = value
        return f"%({name})s"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # PostgreSQL format_type() "numeric(12,2)"; MariaDB COLUMN_TYPE "decimal(12,2)"
    base: str  # PostgreSQL typname "numeric"; MariaDB DATA_TYPE "decimal"
    nullable: bool


@dataclass(frozen=True)
class TableShape:
    table: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    estimated_rows: int
    engine: str = "postgresql"  # the dialect's name

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise ConfigError(f"config: reconcile: {self.table} has no column {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


class Dialect(Protocol):
    """One engine's SQL for reconciliation; every method is pure except `read_shape`,
    `engine` and `prepare_checksum`."""

    name: str

    def engine(self, url: Any, *, name: str, workers: int) -> sa.Engine:
        """Sessions in UTC that print values as `canonical` expects."""

    def quote_ident(self, name: str) -> str: ...

    def quote_table(self, table: str, engine_db: str | None = None) -> str: ...

    def read_shape(self, engine: sa.Engine, table: str, *, side: str) -> TableShape:
        """The table's columns, primary key and row estimate; ConfigError when absent."""

    def family(self, column: Column) -> str:
        """The column's canonical family (`canonical.FAMILIES`)."""

    def canonical(self, column_sql: str, column: Column, family: str) -> str:
        """The column's canonical text in `family` (NULL stays NULL)."""

    def day_of(self, column_sql: str, column: Column, unit: str) -> str:
        """The first day (`YYYY-MM-DD`) of the `unit` (hour .. year) holding the value,
        in UTC; weeks start on Monday."""

    def image_value(self, column_sql: str, column: Column, family: str) -> str:
        """The column as a value of a row image for jsonb_populate_record (corrections)."""

    def row_image(self, pairs: Sequence[tuple[str, str]]) -> str:
        """A JSON object text of (label, value) pairs (corrections' source images)."""

    def row_hash(self, texts: Sequence[tuple[str, bool]]) -> str:
        """A signed 64-bit integer from canonical texts, each with whether it is
        length-prefixed: `canonical.row_hash_of`."""

    def key_text(self, texts: Sequence[str]) -> str:
        """A JSON array text of the key's canonical texts."""

    def sum_text(self, expression: str) -> str:
        """The exact sum of 64-bit integers as decimal text (no overflow)."""

    def as_text(self, expression: str) -> str: ...

    def bucket(
        self, key_sql: str, key_type: str, integer: bool, thresholds: Sequence[Any], params: Params
    ) -> str | None:
        """A one-column key's 0-based bucket by a binary search, or None (use CASE)."""

    def first_level_buckets(self, integer: bool, wanted: int) -> int:
        """How many buckets one statement may take at the first level."""

    def prepare_checksum(self, conn: sa.Connection) -> None:
        """Session settings of a checksum statement's transaction."""

    def sample(self, table_sql: str, key_sql: str, limit: str, percent: str | None) -> str:
        """SELECT `key_sql` of about `limit` random rows (Bernoulli `percent` when given)."""
