"""A MariaDB source table against its PostgreSQL target, row for row, after normalising types.

The two engines hold one datum in different forms; each source value is brought to the
form of its *target column's declared type* (read from the target's catalog, never
guessed from the value), then both sides go through `tests.e2e.compare.normalise`:

    target type     MariaDB value                    normalised to
    boolean         TINYINT(1) 0/1, BIT(1) b'\\x01'   True/False
    jsonb/json      the JSON text                    the parsed value (key order ignored)
    timestamptz     a naive DATETIME/TIMESTAMP       that wall time in UTC (the session and
                                                     the mapping's datetime_zone are UTC)
    date            '0000-00-00' (a zero date)       NULL, which is what the connector
                                                     streams for it
    uuid            CHAR(36) text                    the text
    numeric         an integer (BIGINT UNSIGNED)     Decimal (2**64-1 stays exact)

Everything else compares as it is: text byte for byte (emoji included), DECIMAL as
Decimal, BLOB as bytes, ENUM and SET as their text.

    $ python -m tests.e2e.compare_mariadb MARIADB_URL TARGET_URL TARGET_SCHEMA [TABLE ...]
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from cdc_recon.mariadb.connection import connect, parse_url
from cdc_recon.mariadb.sql import quote_ident
from tests.e2e.compare import Key, Row, SchemaDiff, TableDiff, diff_rows, normalise, read_rows

ZERO_DATES = ("0000-00-00", "0000-00-00 00:00:00")


def to_target_form(value: Any, target_type: str) -> Any:
    """A MariaDB value in the form its target column's type holds (see the docstring)."""
    if value is None:
        return None
    if target_type == "boolean":
        if isinstance(value, bytes):
            return int.from_bytes(value, "big") != 0
        return bool(value)
    if target_type in ("json", "jsonb") and isinstance(value, str | bytes):
        return json.loads(value)
    if target_type.startswith("timestamp with time zone") and isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
    if target_type == "date" and isinstance(value, str) and value in ZERO_DATES:
        return None
    if target_type.startswith("numeric") and isinstance(value, int):
        return Decimal(value)
    return value


def target_types(engine: sa.Engine, table: str) -> dict[str, str]:
    schema, name = table.split(".", 1)
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"
            ),
            {"t": f'"{schema}"."{name}"'},
        )
        return {row[0]: row[1] for row in found}


def read_mariadb_rows(
    url: str, table: str, key: Sequence[str], types: dict[str, str]
) -> dict[Key, Row]:
    parsed = parse_url(url)
    name = f"{quote_ident(parsed.database)}.{quote_ident(table)}"
    rows: dict[Key, Row] = {}
    with connect(parsed) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {name}")
        names = [d[0] for d in cur.description]
        for values in cur.fetchall():
            row = {
                column: normalise(to_target_form(value, types.get(column, "")))
                for column, value in zip(names, values, strict=True)
            }
            rows[tuple(row[c] for c in key)] = row
    return rows


def compare_mariadb_table(
    mariadb_url: str, source_table: str, target: sa.Engine, target_table: str, key: Sequence[str]
) -> TableDiff:
    types = target_types(target, target_table)
    source = read_mariadb_rows(mariadb_url, source_table, key, types)
    copied = read_rows(target, target_table, key)
    database = parse_url(mariadb_url).database
    return diff_rows(source, copied, names=(f"{database}.{source_table}", target_table))


def compare_mariadb(mariadb_url: str, target: sa.Engine, target_schema: str) -> SchemaDiff:
    """The MariaDB shop's five tables against their copies in `target_schema`."""
    from cdc_recon.workload import TABLES

    return SchemaDiff(
        tuple(
            compare_mariadb_table(mariadb_url, t.name, target, f"{target_schema}.{t.name}", t.key)
            for t in TABLES
        )
    )


def main(argv: Sequence[str]) -> int:
    from cdc_recon.pg.engine import create_engine

    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    mariadb_url, target_url, target_schema = argv
    target = create_engine(target_url)
    try:
        diff = compare_mariadb(mariadb_url, target, target_schema)
    finally:
        target.dispose()
    print(diff.summary())
    print(f"{diff.rows} source rows, {diff.differences} differences")
    return 0 if diff.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
