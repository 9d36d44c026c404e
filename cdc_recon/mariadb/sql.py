"""Quoting for MariaDB: identifiers in backticks, `db.table` names.

Identifiers come from the configuration and the catalog, never from event data; they are
quoted all the same, as in `cdc_recon.pg.sql`.
"""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """`name` in backticks, a backtick in it doubled; NUL is refused."""
    if not name or "\x00" in name:
        raise ValueError(f"not a MariaDB identifier: {name!r}")
    return "`" + name.replace("`", "``") + "`"


def split_table(table: str, default_db: str) -> tuple[str, str]:
    """(database, table) of `db.table`, or of a bare `table` in `default_db`."""
    db, sep, name = table.partition(".")
    return (db, name) if sep else (default_db, table)


def quote_table(table: str, default_db: str) -> str:
    db, name = split_table(table, default_db)
    return f"{quote_ident(db)}.{quote_ident(name)}"
