"""Re-reading current rows from a PostgreSQL source, with a position the applier can order.

A re-read row becomes a snapshot-like event whose position is a WAL LSN, so it must be
newer than every change the image reflects and older than every change it does not:

- Rows that exist are read with `SELECT ... FOR SHARE`, which first waits for any
  transaction still changing them, and holds them until commit; the LSN is read after
  the locks, in the same transaction. Every change the image reflects was written before
  that LSN, and any later change to those rows waits for our commit, so is written after.
- Keys without a row (deleted, or never inserted) cannot be locked. Their LSN is read
  first, then we wait until every transaction that held a write lock on the table at that
  moment has ended, and look again: a key still absent cannot gain a row from a change
  written before the LSN. (A delete committed in between may carry a later LSN; the
  replayed delete is then superseded, and the sweeper replays that delete again.)

The LSN is `pg_current_wal_insert_lsn()`, which is past every record already inserted
even with `synchronous_commit=off`, as the trigger change log records it. `xid` is the
re-reading transaction's own 32-bit xid (`txid_current() & 0xffffffff`).

Names come from the configuration and are always quoted; key values travel as one JSON
parameter that `jsonb_populate_recordset` turns into the table's own column types.
PostgreSQL only.

    >>> rows = SourceRows(engine)                                       # doctest: +SKIP
    >>> found = rows.read_keys(mapping, ['["1"]', '["2"]'])             # doctest: +SKIP
    >>> [(r.lsn, r.rows, r.absent) for r in found.reads]                # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from cdc_recon.config import TableMapping
from cdc_recon.exceptions import ConfigError, DatabaseUnavailable, SourceBusy
from cdc_recon.pg.errors import LOCK_NOT_AVAILABLE, UNDEFINED, reason, sqlstate, unreachable
from cdc_recon.pg.sql import quote_ident, quote_table
from cdc_recon.source_db.changelog import changes_table

LOCK_TIMEOUT = 30.0  # seconds to wait for a row lock before giving up
WRITERS_TIMEOUT = 30.0  # seconds to wait for the table's writers before giving up
MAX_ROUNDS = 3  # locked read, then confirm the absent keys; again for keys that came back

POSITION = (
    "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint, "
    "txid_current() & 4294967295, "
    "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
)
WRITERS = (
    "SELECT coalesce(array_agg(DISTINCT virtualtransaction), '{}') FROM pg_locks "
    "WHERE locktype = 'relation' AND relation = %(table)s::regclass "
    "AND mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', "
    "'AccessExclusiveLock') AND pid <> pg_backend_pid()"
)
WRITERS_LEFT = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' "
    "AND relation = %(table)s::regclass AND virtualtransaction = ANY(%(writers)s)"
)


@dataclass(frozen=True)
class SourceRead:
    """Rows of one source table read in one transaction, and the position they carry.

    `rows` maps key_text (the change-identity form) to the row by source column name;
    `absent` are asked-for keys confirmed to have no row: deletes.
    """

    table: str
    lsn: int
    xid: int
    read_ms: int
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()
    # The absent keys' values as the key columns' types hold them (a delete's key must
    # have the types a message key would: 3, not "3").
    absent_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Another source family's position and transaction marker (a MariaDB re-read:
    # binlog (file index, position, 0), `file:position`, "mysql"); PostgreSQL's are
    # `lsn` and `xid`.
    position: tuple[int, ...] = ()
    tx: str = ""
    connector: str = "postgresql"

    @property
    def position_parts(self) -> tuple[int, ...]:
        return self.position or (self.lsn,)

    @property
    def transaction(self) -> str:
        return self.tx or str(self.xid)

    @property
    def where(self) -> str:
        """Where in the source's log the read was, for an operator."""
        return f"binlog {self.tx}" if self.tx else f"LSN {self.lsn}"


@dataclass(frozen=True)
class KeysRead:
    """What `read_keys` found: one `SourceRead` per transaction, and keys left unresolved
    (their row came and went while we looked; the sweeper tries them again)."""

    reads: list[SourceRead]
    unresolved: frozenset[str] = frozenset()


def key_object(key_text: str, columns: Sequence[str]) -> dict[str, str]:
    """`{column: text}` from a key_text; `ValueError` unless it holds one string per column."""
    try:
        values = orjson.loads(key_text)
    except orjson.JSONDecodeError:
        raise ValueError(f"key {key_text!r} is not JSON") from None
    if not isinstance(values, list) or len(values) != len(columns):
        raise ValueError(f"key {key_text!r} is not a JSON array of {len(columns)} value(s)")
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"key {key_text!r} is not a JSON array of strings")
    return dict(zip(columns, values, strict=True))


def key_objects(key_texts: Sequence[str], columns: Sequence[str]) -> str:
    """The JSON array of key objects that `jsonb_populate_recordset` reads."""
    return orjson.dumps([key_object(text, columns) for text in key_texts]).decode()


def _key_text_sql(columns: Sequence[str]) -> str:
    values = ", ".join(f"t.{quote_ident(c)}::text" for c in columns)
    return f"array_to_json(ARRAY[{values}])::text"


def rows_by_key(mapping: TableMapping, *, lock: bool = True) -> str:
    """The rows of `%(keys)s` (see `key_objects`), key_text first, locked FOR SHARE."""
    table = quote_table(mapping.source)
    match = " AND ".join(f"t.{quote_ident(c)} = k.{quote_ident(c)}" for c in mapping.key)
    return (
        f"SELECT {_key_text_sql(mapping.key)}, t.* "
        f"FROM jsonb_populate_recordset(NULL::{table}, %(keys)s::jsonb) AS k "
        f"JOIN {table} AS t ON {match}" + (" FOR SHARE OF t" if lock else "")
    )


def typed_keys(mapping: TableMapping) -> str:
    """key_text and the key columns of `%(keys)s`, cast to the table's column types."""
    table = quote_table(mapping.source)
    columns = ", ".join(f"t.{quote_ident(c)}" for c in mapping.key)
    return (
        f"SELECT {_key_text_sql(mapping.key)}, {columns} "
        f"FROM jsonb_populate_recordset(NULL::{table}, %(keys)s::jsonb) AS t"
    )


def rows_after(mapping: TableMapping, resume: bool) -> str:
    """One keyset chunk of the whole table in key order, locked FOR SHARE."""
    table = quote_table(mapping.source)
    keys = ", ".join(f"t.{quote_ident(c)}" for c in mapping.key)
    if not resume:
        return (
            f"SELECT {_key_text_sql(mapping.key)}, t.* FROM {table} AS t "
            f"ORDER BY {keys} LIMIT %(limit)s FOR SHARE OF t"
        )
    after = ", ".join(f"a.{quote_ident(c)}" for c in mapping.key)
    return (
        f"SELECT {_key_text_sql(mapping.key)}, t.* FROM {table} AS t, "
        f"jsonb_populate_record(NULL::{table}, %(after)s::jsonb) AS a "
        f"WHERE ({keys}) > ({after}) ORDER BY {keys} LIMIT %(limit)s FOR SHARE OF t"
    )


def changed_keys(changelog_schema: str) -> str:
    """Distinct keys of `%(tables)s` changed in `[%(from)s, %(to)s)`, in the change log."""
    return (
        f"SELECT DISTINCT source_table, key_text FROM {changes_table(changelog_schema)} "
        "WHERE changed_at >= %(from)s AND changed_at < %(to)s "
        "AND source_table = ANY(%(tables)s) ORDER BY source_table, key_text"
    )


class SourceRows:
    """Reads rows of mapped source tables; each read is one short transaction."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        lock_timeout: float = LOCK_TIMEOUT,
        writers_timeout: float = WRITERS_TIMEOUT,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ConfigError(
                f"config: source_url: re-reading rows needs a PostgreSQL source, "
                f"not {engine.dialect.name}",
                key="source_url",
            )
        self.engine = engine
        self._lock_timeout_ms = max(int(lock_timeout * 1000), 1)
        self._writers_timeout = writers_timeout

    def read_keys(self, mapping: TableMapping, key_texts: Sequence[str]) -> KeysRead:
        """The current rows of `key_texts`; keys without a row are `absent` (see module)."""
        reads: list[SourceRead] = []
        todo = list(dict.fromkeys(key_texts))
        for _ in range(MAX_ROUNDS):
            read = self._locked_read(
                mapping, rows_by_key(mapping), {"keys": key_objects(todo, mapping.key)}
            )
            reads.append(read)
            missing = [k for k in todo if k not in read.rows]
            if not missing:
                return KeysRead(reads)
            gone = self._confirm_absent(mapping, missing)
            reads.append(gone)
            todo = [k for k in missing if k not in gone.absent]
            if not todo:
                return KeysRead(reads)
        return KeysRead(reads, frozenset(todo))

    def scan(self, mapping: TableMapping, chunk: int) -> Iterator[SourceRead]:
        """Every row of the table in key order, `chunk` rows per transaction."""
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": chunk}
            if after is not None:
                params["after"] = orjson.dumps(key_object(after, mapping.key)).decode()
            read = self._locked_read(mapping, rows_after(mapping, after is not None), params)
            if read.rows:
                yield read
            if len(read.rows) < chunk:
                return
            after = next(reversed(read.rows))

    def changed_keys(
        self, changelog_schema: str, start: datetime, end: datetime, tables: Sequence[str]
    ) -> dict[str, list[str]] | None:
        """Keys per table changed in `[start, end)`; None when there is no change log."""
        with self._connect() as conn:
            exists = conn.exec_driver_sql(
                "SELECT to_regclass(%(t)s) IS NOT NULL", {"t": changes_table(changelog_schema)}
            ).scalar()
            if not exists:
                return None
            found = conn.exec_driver_sql(
                changed_keys(changelog_schema),
                {"from": start, "to": end, "tables": list(tables)},
            ).all()
        keys: dict[str, list[str]] = {}
        for table, key in found:
            keys.setdefault(table, []).append(key)
        return keys

    # -- the two kinds of read ---------------------------------------------------------

    def _locked_read(self, mapping: TableMapping, sql: str, params: dict[str, Any]) -> SourceRead:
        with self._connect() as conn, conn.begin():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {self._lock_timeout_ms:d}")
            result = conn.exec_driver_sql(sql, params)
            names = list(result.keys())[1:]
            rows = {row[0]: dict(zip(names, row[1:], strict=True)) for row in result}
            lsn, xid, read_ms = conn.exec_driver_sql(POSITION).one()
        return SourceRead(mapping.source, int(lsn), int(xid), int(read_ms), rows)

    def _confirm_absent(self, mapping: TableMapping, keys: Sequence[str]) -> SourceRead:
        """The keys still without a row once the table's writers at the LSN have ended."""
        table = quote_table(mapping.source)
        with self._connect() as conn, conn.begin():
            lsn, xid, read_ms = conn.exec_driver_sql(POSITION).one()
            writers = conn.exec_driver_sql(WRITERS, {"table": table}).scalar_one()
            self._wait_for(conn, table, list(writers))
            params = {"keys": key_objects(keys, mapping.key)}
            present = {
                row[0] for row in conn.exec_driver_sql(rows_by_key(mapping, lock=False), params)
            }
            typed = {
                row[0]: dict(zip(mapping.key, row[1:], strict=True))
                for row in conn.exec_driver_sql(typed_keys(mapping), params)
            }
        absent = frozenset(k for k in keys if k not in present)
        found = {k: typed[k] for k in absent if k in typed}
        return SourceRead(
            mapping.source, int(lsn), int(xid), int(read_ms), absent=absent, absent_keys=found
        )

    def _wait_for(self, conn: sa.Connection, table: str, writers: list[str]) -> None:
        deadline = time.monotonic() + self._writers_timeout
        delay = 0.01
        while writers:
            left = conn.exec_driver_sql(WRITERS_LEFT, {"table": table, "writers": writers})
            if left.scalar_one() == 0:
                return
            if time.monotonic() > deadline:
                raise SourceBusy(
                    f"transactions writing {table} stayed open for {self._writers_timeout:g}s",
                    table=table,
                )
            time.sleep(delay)  # polling another session's transaction: there is no wait call
            delay = min(delay * 2, 0.25)

    def _connect(self) -> _SourceConnection:
        return _SourceConnection(self.engine)


class _SourceConnection:
    """`engine.connect()` with driver errors turned into ours."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._conn: sa.Connection | None = None

    def __enter__(self) -> sa.Connection:
        try:
            self._conn = self._engine.connect()
        except sa.exc.OperationalError as exc:
            raise unreachable("source", exc, service="source") from exc
        return self._conn

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        assert self._conn is not None
        self._conn.close()
        if isinstance(exc, sa.exc.DBAPIError):
            code = sqlstate(exc)
            if code == LOCK_NOT_AVAILABLE:
                raise SourceBusy(f"source rows stayed locked: {reason(exc)}") from exc
            if code in UNDEFINED:
                raise ConfigError(f"config: tables: source database: {reason(exc)}") from exc
            if isinstance(exc, sa.exc.OperationalError):
                raise DatabaseUnavailable(
                    f"source database: {reason(exc)}", service="source"
                ) from exc
