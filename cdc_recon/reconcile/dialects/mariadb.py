"""MariaDB (and MySQL) as the source side of a reconciliation, through `cdc_recon.mariadb`.

The canonical texts of `canonical.py`, as MariaDB computes them in a '+00:00' session:

    int        CAST(c AS CHAR)             (BIGINT UNSIGNED in full, to 2^64-1)
    numeric    DECIMAL(p,s>0): the text without trailing zeros and point, 0 as `0`
    timestamp  CAST(CAST(c AS DATETIME(6)) AS CHAR) (of a (6) column: CAST(c AS CHAR)),
               a zero date as NULL
    date       CAST(CAST(c AS DATE) AS CHAR), a zero date as NULL
    bool       CASE WHEN c <> 0 THEN 't' WHEN c = 0 THEN 'f' END (TINYINT(1), BIT(1))
    uuid       LOWER(c)                    bytes      LOWER(HEX(c))
    text       CAST(c AS CHAR): the stored characters, whatever the collation compares
    json/float the stored text (fetched, compared in Python)

Row hash: CAST(CONV(LEFT(MD5(CONCAT(...)), 16), 16, -10) AS SIGNED), a negative base
making CONV read the 64 bits as signed; SUM over BIGINT is DECIMAL, exact. A one-column
integer key finds its bucket with INTERVAL(), a binary search over sorted constants.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from cdc_recon.exceptions import ConfigError
from cdc_recon.mariadb.connection import parse_url
from cdc_recon.mariadb.engine import create_engine
from cdc_recon.mariadb.sql import quote_ident, quote_table, split_table
from cdc_recon.reconcile.dialects.base import Column, Params, TableShape
from cdc_recon.reconcile.dialects.canonical import NULL

_COLUMNS = """
SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, IS_NULLABLE = 'YES' FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = %(db)s AND TABLE_NAME = %(table)s ORDER BY ORDINAL_POSITION"""
_PRIMARY_KEY = """
SELECT COLUMN_NAME FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = %(db)s AND TABLE_NAME = %(table)s AND INDEX_NAME = 'PRIMARY'
ORDER BY SEQ_IN_INDEX"""
_ESTIMATE = """
SELECT TABLE_ROWS FROM information_schema.TABLES
WHERE TABLE_SCHEMA = %(db)s AND TABLE_NAME = %(table)s"""

_INTEGERS = frozenset({"tinyint", "smallint", "mediumint", "int", "bigint", "year"})
_TEXTS = frozenset({"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"})
_BYTES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
_FAMILY = {"decimal": "numeric", "float": "float", "double": "float", "date": "date",
           "datetime": "timestamp", "timestamp": "timestamp", "json": "json"}  # fmt: skip
_SCALE = re.compile(r"^decimal\(\d+,(\d+)\)")
_ZERO_DATE = "'0000-00-00'"
_ZERO_TIME = "'0000-00-00 00:00:00.000000'"
BUCKET_CASES = 64  # a CASE of row comparisons costs per branch: keep non-integer buckets few


class MariaDb:
    name = "mariadb"

    def engine(self, url: Any, *, name: str, workers: int) -> sa.Engine:
        raw = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url)
        return create_engine(parse_url(raw), pool_size=workers + 1)

    def quote_ident(self, name: str) -> str:
        return quote_ident(name)

    def quote_table(self, table: str, engine_db: str | None = None) -> str:
        return quote_table(table, engine_db or "")

    def read_shape(self, engine: sa.Engine, table: str, *, side: str) -> TableShape:
        db, name = split_table(table, engine.url.database or "")
        params = {"db": db, "table": name}
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(_COLUMNS, params).all()
            key = conn.exec_driver_sql(_PRIMARY_KEY, params).scalars().all()
            estimate = conn.exec_driver_sql(_ESTIMATE, params).scalar()
        if not rows:
            raise ConfigError(f"config: reconcile: table {table} does not exist in the {side}")
        return TableShape(
            table=f"{db}.{name}",
            columns=tuple(Column(r[0], str(r[1]), str(r[2]), bool(r[3])) for r in rows),
            primary_key=tuple(key),
            estimated_rows=int(estimate or 0),
            engine=self.name,
        )

    def family(self, column: Column) -> str:
        if column.type.startswith("tinyint(1)") or column.type == "bit(1)":
            return "bool"
        if column.base in _INTEGERS:
            return "int"
        if column.base in _BYTES:
            return "bytes"
        if column.base == "decimal" and not _scale(column):
            return "int"
        return _FAMILY.get(column.base, "text")

    def canonical(self, column_sql: str, column: Column, family: str) -> str:
        c = column_sql
        if family in ("int", "numeric"):
            if column.base == "decimal" and _scale(column):
                trimmed = f"TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM CAST({c} AS CHAR)))"
                return f"CASE WHEN {c} = 0 THEN '0' ELSE {trimmed} END"
            return f"CAST({c} AS CHAR)"
        if family == "timestamp":
            if column.base in ("datetime", "timestamp") and column.type.endswith("(6)"):
                c = f"CAST({c} AS CHAR)"  # prints its six digits already, at a third the cost
            else:
                c = f"CAST(CAST({c} AS DATETIME(6)) AS CHAR)"
            return f"NULLIF({c}, {_ZERO_TIME})"
        if family == "date":
            return f"NULLIF(CAST(CAST({c} AS DATE) AS CHAR), {_ZERO_DATE})"
        if family == "bool":
            return f"CASE WHEN {c} <> 0 THEN 't' WHEN {c} = 0 THEN 'f' END"
        if family == "uuid":
            return f"LOWER({c})"
        if family == "bytes":
            return f"LOWER(HEX({c}))"
        return f"CAST({c} AS CHAR)"

    def day_of(self, column_sql: str, column: Column, unit: str) -> str:
        day = f"CAST({column_sql} AS DATE)"
        first = {
            "hour": day,
            "day": day,
            "week": f"{day} - INTERVAL WEEKDAY({day}) DAY",
            "month": f"{day} - INTERVAL (DAYOFMONTH({day}) - 1) DAY",
            "year": f"MAKEDATE(YEAR({day}), 1)",
        }[unit]
        return f"CAST({first} AS CHAR)"

    def image_value(self, column_sql: str, column: Column, family: str) -> str:
        if family == "json":
            return f"JSON_EXTRACT({column_sql}, '$')"
        if family == "bytes":  # bytea's hex input: a backslash, x, the digits
            return f"CONCAT(CHAR(92 USING utf8mb4), 'x', LOWER(HEX({column_sql})))"
        return self.canonical(column_sql, column, family)

    def row_image(self, pairs: Sequence[tuple[str, str]]) -> str:
        return f"CAST(JSON_OBJECT({', '.join(f'{k}, {v}' for k, v in pairs)}) AS CHAR)"

    def row_hash(self, texts: Sequence[tuple[str, bool]]) -> str:
        parts = [
            f"COALESCE(CONCAT(CHAR_LENGTH({t}), ':', {t}), '{NULL}')"
            if prefix
            else f"COALESCE({t}, '{NULL}')"
            for t, prefix in texts
        ]
        digest = f"MD5(CONCAT_WS(',', {', '.join(parts) or repr('')}))"
        return f"CAST(CONV(LEFT({digest}, 16), 16, -10) AS SIGNED)"

    def key_text(self, texts: Sequence[str]) -> str:
        return f"CAST(JSON_ARRAY({', '.join(texts)}) AS CHAR)"

    def sum_text(self, expression: str) -> str:
        return f"CAST(SUM({expression}) AS CHAR)"

    def as_text(self, expression: str) -> str:
        return f"CAST({expression} AS CHAR)"

    def bucket(
        self, key_sql: str, key_type: str, integer: bool, thresholds: Sequence[Any], params: Params
    ) -> str | None:
        if not integer:
            return None
        return f"INTERVAL({key_sql}, {', '.join(params.add(int(t)) for t in thresholds)})"

    def first_level_buckets(self, integer: bool, wanted: int) -> int:
        return wanted if integer else min(wanted, BUCKET_CASES)

    def prepare_checksum(self, conn: sa.Connection) -> None:
        return None

    def sample(self, table_sql: str, key_sql: str, limit: str, percent: str | None) -> str:
        sampled = f" WHERE RAND() * 100 < {percent}" if percent else ""
        return f"SELECT {key_sql} FROM {table_sql}{sampled} ORDER BY RAND() LIMIT {limit}"


def _scale(column: Column) -> int:
    found = _SCALE.match(column.type)
    return int(found.group(1)) if found else 0


MARIADB = MariaDb()
