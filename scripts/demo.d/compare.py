"""Compares a source table with its target copy row for row; prints the differences.

Usage: python compare.py SOURCE_URL TARGET_URL SCHEMA.TABLE KEY_COLUMN
Prints one summary line; exits 0 when the tables are equal, 1 otherwise.
"""

from __future__ import annotations

import sys
from typing import Any

import psycopg2


def rows(url: str, table: str, key: str) -> dict[Any, tuple[Any, ...]]:
    schema, name = table.split(".", 1)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT * FROM "{schema}"."{name}" ORDER BY "{key}"')
        columns = [d[0] for d in cur.description]
        index = columns.index(key)
        return {row[index]: tuple(row) for row in cur.fetchall()}


def main() -> int:
    source_url, target_url, table, key = sys.argv[1:5]
    source, target = rows(source_url, table, key), rows(target_url, table, key)
    missing = sorted(set(source) - set(target))
    extra = sorted(set(target) - set(source))
    changed = sorted(k for k in set(source) & set(target) if source[k] != target[k])
    total = len(missing) + len(extra) + len(changed)
    print(
        f"{table}: {len(source)} source rows, {len(target)} target rows, {total} differences "
        f"(missing {missing[:8]}, extra {extra[:8]}, mismatched {changed[:8]})"
    )
    return 0 if total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
