"""Re-reading current rows from a MariaDB source, at a binlog position the applier orders.

Each read is one transaction opened with `START TRANSACTION WITH CONSISTENT SNAPSHOT`;
`SHOW STATUS LIKE 'binlog_snapshot_%'` then names the binlog file and position of that
snapshot: every transaction committed before it is visible and wrote its events before
that position, every later one is invisible and writes its events after it (MariaDB
keeps the snapshot and the binlog consistent for exactly this). So a re-read row, as an
event at position (file index, snapshot position, 0), orders after every change it
reflects and before every change it does not, against Debezium's (file index, pos, row)
positions; a key without a row in the snapshot is a delete at that position. No row is
locked and nothing is waited for.

Values are converted to what the connector's messages decode to by
`cdc_recon.source_db.mariadb_values`; the event's `tx` is `file:position` of the
snapshot (the connector's own form for a change without a GTID), so the ledger records
a re-read under its own change id.

    >>> rows = MariaDbRows(url)                                          # doctest: +SKIP
    >>> found = rows.read_keys(mapping, ['["1"]', '["2"]'])             # doctest: +SKIP
    >>> [(r.position, r.rows, r.absent) for r in found.reads]           # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from cdc_recon.config import TableMapping
from cdc_recon.events import key_text
from cdc_recon.exceptions import ConfigError, SourceBusy
from cdc_recon.mariadb.connection import MariaDbUrl, session
from cdc_recon.mariadb.sql import quote_ident, quote_table, split_table
from cdc_recon.source_db import mariadb_changelog as changelog
from cdc_recon.source_db.mariadb_values import Column, convert_row, converters, key_param
from cdc_recon.source_db.rows import KeysRead, SourceRead, key_object

SNAPSHOT = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"
SNAPSHOT_STATUS = "SHOW STATUS LIKE 'binlog_snapshot_%'"
NOW_MS = "SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000 AS SIGNED)"
COLUMNS = (
    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = %(db)s AND TABLE_NAME = %(table)s ORDER BY ORDINAL_POSITION"
)
_INDEX = re.compile(r"(\d+)$")


def snapshot_position(status: dict[str, str]) -> tuple[tuple[int, int, int], str]:
    """(file index, position, 0) and `file:position` from the snapshot status rows."""
    file, pos = status.get("Binlog_snapshot_file", ""), status.get("Binlog_snapshot_position")
    found = _INDEX.search(file)
    if not found or pos is None:
        raise ConfigError(
            "config: source_url: the MariaDB source has no binary log (log_bin), so a "
            "re-read cannot be ordered against the connector's changes",
            key="source_url",
        )
    return (int(found.group(1)), int(pos), 0), f"{file}:{pos}"


class MariaDbRows:
    """Reads rows of mapped MariaDB tables; each read is one consistent snapshot."""

    def __init__(self, url: MariaDbUrl) -> None:
        self.url = url
        self._columns: dict[str, list[Column]] = {}

    def read_keys(self, mapping: TableMapping, key_texts: Sequence[str]) -> KeysRead:
        """The rows of `key_texts` in one snapshot; keys without a row are `absent`."""
        wanted = list(dict.fromkeys(key_texts))
        with session(self.url, "source (re-read)", refused=ConfigError) as cur:
            columns = self._table_columns(cur, mapping.source)
            types = {name: kind for name, kind, _ in columns}
            keys = [key_object(text, mapping.key) for text in wanted]
            params = [key_param(types[c], k[c]) for k in keys for c in mapping.key]
            read = self._snapshot(cur, mapping, columns, self._by_keys(mapping, len(keys)), params)
            absent = frozenset(k for k in wanted if k not in read.rows)
            convert = converters(c for c in columns if c[0] in mapping.key)
            typed = {
                text: convert_row(
                    {c: key_param(types[c], v) for c, v in key_object(text, mapping.key).items()},
                    convert,
                )
                for text in absent
            }
        rows = {k: v for k, v in read.rows.items() if k in set(wanted)}
        return KeysRead([_with(read, rows=rows, absent=absent, absent_keys=typed)])

    def scan(self, mapping: TableMapping, chunk: int) -> Iterator[SourceRead]:
        """Every row of the table in key order, `chunk` rows per snapshot."""
        after: list[Any] | None = None
        while True:
            with session(self.url, "source (scan)", refused=ConfigError) as cur:
                columns = self._table_columns(cur, mapping.source)
                sql = self._after(mapping, after is not None, chunk)
                read = self._snapshot(cur, mapping, columns, sql, after or [])
            if read.rows:
                yield read
            if len(read.rows) < chunk:
                return
            last = next(reversed(read.rows.values()))
            after = [last[c] for c in mapping.key]

    def changed_keys(
        self, changelog_db: str, start: datetime, end: datetime, tables: Sequence[str]
    ) -> dict[str, list[str]] | None:
        """Keys per table changed in `[start, end)`; None when there is no change log."""
        with session(self.url, "source (change log)", refused=ConfigError) as cur:
            cur.execute(changelog.table_exists(), {"db": changelog_db, "table": "changes"})
            if not cur.fetchone()[0]:
                return None
            params = {
                "from": int(start.timestamp()),
                "to": int(end.timestamp()) + (0 if end.timestamp() % 1 == 0 else 1),
                **changelog.table_params(tables),
            }
            cur.execute(changelog.changed_keys(changelog_db, len(tables)), params)
            found = cur.fetchall()
        keys: dict[str, list[str]] = {}
        for table, key in found:
            keys.setdefault(table, []).append(key)
        return keys

    # -- one snapshot --------------------------------------------------------------

    def _snapshot(
        self,
        cur: Any,
        mapping: TableMapping,
        columns: list[Column],
        sql: str,
        params: Sequence[Any],
    ) -> SourceRead:
        cur.connection.rollback()
        cur.execute(SNAPSHOT)
        cur.execute(SNAPSHOT_STATUS)
        position, tx = snapshot_position({name: value for name, value in cur.fetchall()})
        cur.execute(NOW_MS)
        read_ms = int(cur.fetchone()[0])
        cur.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        convert = converters(columns)
        rows: dict[str, dict[str, Any]] = {}
        for values in cur.fetchall():
            try:
                row = convert_row(dict(zip(names, values, strict=True)), convert)
            except ValueError as exc:
                raise SourceBusy(f"{mapping.source}: a value cannot be re-read: {exc}") from exc
            rows[key_text([row[c] for c in mapping.key])] = row
        return SourceRead(
            mapping.source, 0, 0, read_ms, rows, position=position, tx=tx, connector="mysql"
        )

    def _table_columns(self, cur: Any, table: str) -> list[Column]:
        if table not in self._columns:
            db, name = split_table(table, self.url.database)
            cur.execute(COLUMNS, {"db": db, "table": name})
            found = [tuple(row) for row in cur.fetchall()]
            if not found:
                raise ConfigError(f"config: tables: source table {table} does not exist")
            self._columns[table] = [(str(a), str(b), str(c)) for a, b, c in found]
        return self._columns[table]

    def _by_keys(self, mapping: TableMapping, count: int) -> str:
        table = quote_table(mapping.source, self.url.database)
        columns = ", ".join(quote_ident(c) for c in mapping.key)
        one = "(" + ", ".join(["%s"] * len(mapping.key)) + ")"
        return f"SELECT * FROM {table} WHERE ({columns}) IN ({', '.join([one] * count)})"

    def _after(self, mapping: TableMapping, resume: bool, chunk: int) -> str:
        table = quote_table(mapping.source, self.url.database)
        columns = ", ".join(quote_ident(c) for c in mapping.key)
        where = ""
        if resume:
            where = f" WHERE ({columns}) > (" + ", ".join(["%s"] * len(mapping.key)) + ")"
        return f"SELECT * FROM {table}{where} ORDER BY {columns} LIMIT {int(chunk)}"


def _with(read: SourceRead, **changes: Any) -> SourceRead:
    import dataclasses

    return dataclasses.replace(read, **changes)
