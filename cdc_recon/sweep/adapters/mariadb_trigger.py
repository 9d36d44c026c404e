"""Adapter `mariadb_trigger`: a change-log table in a MariaDB source, fed by row triggers.

`cdc-recon source install --table source.customers` (with a `mariadb://` source_url)
installs it (`cdc_recon.source_db.mariadb_changelog`: the table, the triggers, and the
identity an entry carries). Per closed window the sweeper:

1. stages the window's entries counted per (table, key, op, second), in the MariaDB
   query's own GROUP BY, into the target's `_cdcr_sweep_counts`;
2. classifies the counts against the ledger (`cdc_recon.sweep.mariadb_queries`): each
   change short is applied (replayed before), superseded, in flight or missed;
3. looks the missed ones up in the CDC topics (`kafka_lookup`): one found there gets its
   real change id and coordinates and is replayed from Kafka; the others keep their log
   id (`table:key:op@second#k`) and are replayed by re-reading the key's row from
   MariaDB (`cdc_recon.source_db.mariadb_rows`).

What it proves: every change of the log is applied, superseded or reported missed with
its count, exactly per change while a key changes at most once per op and second,
otherwise per key, op and second (a shortfall of one of two).

    >>> log = MariaDbTriggerLog(settings)                  # doctest: +SKIP
    >>> log.install(["source.customers"])                  # doctest: +SKIP
    [Installed(table='source.customers', key=('id',))]
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from cdc_recon.config import Settings
from cdc_recon.exceptions import ConfigError, SweepError
from cdc_recon.mariadb.connection import MariaDbUrl, parse_url, session
from cdc_recon.pg.sql import copy_plain, position_literal
from cdc_recon.pg.transfer import copy_lines
from cdc_recon.source_db import mariadb_changelog as sql
from cdc_recon.sweep import mariadb_queries as counts_sql
from cdc_recon.sweep.adapters.base import Window
from cdc_recon.sweep.adapters.kafka_lookup import Identity, find_messages
from cdc_recon.sweep.adapters.pg_trigger import Installed

PRUNE_CHUNK = 10_000  # entries deleted per statement (short transactions on the source)


def mariadb_url(settings: Settings) -> MariaDbUrl:
    if settings.source_url is None:
        raise ConfigError(
            "config: source_url: the sweeper needs the source database", key="source_url"
        )
    return parse_url(settings.source_url.get_secret_value())


def epoch(moment: dt.datetime) -> float:
    return moment.timestamp()


class MariaDbTriggerLog:
    """The trigger-fed change log of one MariaDB source; see the module docstring."""

    name = "mariadb_trigger"
    unit = "changes"
    transactions = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = mariadb_url(settings)
        self.db = settings.sweeper.changelog_schema
        self.batch_size = settings.sweeper.batch_size
        self.tables = [m.source for m in settings.tables]

    def close(self) -> None:
        pass  # one connection per call

    def qualified(self, table: str) -> str:
        """`db.table`; a bare name is in the URL's database."""
        return table if "." in table else f"{self.url.database}.{table}"

    # -- install -------------------------------------------------------------------

    def install(self, tables: Sequence[str]) -> list[Installed]:
        """Create the log and the triggers of each of `tables`. MariaDB commits DDL
        statement by statement; every one is idempotent, so a failed install is rerun."""
        done: list[Installed] = []
        with self._session("install") as cur:
            for statement in sql.changelog_ddl(self.db):
                cur.execute(statement)
            for name in map(self.qualified, tables):
                key, columns = self._columns(cur, name)
                for statement in sql.install_statements(self.db, name, key, columns):
                    cur.execute(statement)
                done.append(Installed(name, key))
        return done

    def _columns(self, cur: Any, table: str) -> tuple[tuple[str, ...], list[str]]:
        db, name = table.split(".", 1)
        cur.execute(sql.columns_query(), {"db": db, "table": name})
        rows = cur.fetchall()
        if not rows:
            raise ConfigError(f"source table {table} does not exist", key="tables")
        types = {column: kind for column, kind, _ in rows}
        mapping = self.settings.mapping_for(table)
        if mapping is not None:
            key = mapping.key
        else:
            key = tuple(c for c, _, pos in sorted(rows, key=lambda r: r[2] or 0) if pos)
        if not key:
            raise ConfigError(
                f"source table {table} has no primary key: map it with a `key`", key="tables"
            )
        unusable = [c for c in key if types.get(c) not in sql.KEY_TYPES]
        if unusable:
            raise ConfigError(
                f"source table {table}: key column(s) {', '.join(unusable)} are not of an "
                "integer, decimal or char type, whose text both sides print alike",
                key="tables",
            )
        return key, [c for c, _, _ in rows]

    def uninstall(self, tables: Sequence[str] = (), *, drop_log: bool = False) -> list[str]:
        """Remove the triggers of `tables` (all installed ones when empty); `drop_log`
        drops the change-log table too. Returns the tables whose triggers were removed."""
        installed = self.installed()
        chosen = [self.qualified(t) for t in tables] if tables else installed
        with self._session("uninstall") as cur:
            for name in chosen:
                for statement in sql.uninstall_statements(name):
                    cur.execute(statement)
            if drop_log:
                cur.execute(sql.drop_log(self.db))
        return [name for name in chosen if name in installed]

    def installed(self) -> list[str]:
        log = f"%{sql.changes_table(self.db)}%"
        with self._session("read") as cur:
            cur.execute(sql.installed_tables(), {"prefix": "cdcr\\_%", "log": log})
            return [row[0] for row in cur.fetchall()]

    # -- the sweeper's side --------------------------------------------------------

    def earliest(self) -> dt.datetime | None:
        if not self.tables:
            return None
        with self._session("read") as cur:
            cur.execute(sql.earliest_change(self.db, len(self.tables)), self._names())
            second = cur.fetchone()[0]
        return None if second is None else dt.datetime.fromtimestamp(second, tz=dt.UTC)

    def closed_until(self, grace: float) -> dt.datetime:
        """The last whole second before which every entry is committed (see
        `mariadb_changelog.closed_until`); checks that the log is installed."""
        with self._session("read") as cur:
            cur.execute(sql.table_exists(), {"db": self.db, "table": sql.CHANGES_TABLE})
            if not cur.fetchone()[0]:
                raise ConfigError(
                    f"no change log {self.db}.{sql.CHANGES_TABLE} in the source: run "
                    "`cdc-recon source install --table ...` (or set sweeper.changelog_schema)",
                    key="sweeper.changelog_schema",
                )
            cur.execute(sql.closed_until(), {"grace": grace})
            until = float(cur.fetchone()[0])
        return dt.datetime.fromtimestamp(math.floor(until), tz=dt.UTC)

    def stage(self, cursor: Any, window: Window) -> int:
        """Copy the window's counts into the target's stage; returns the changes counted.
        A second belongs to the window when it lies in [start, end)."""
        for statement in counts_sql.create_stage():
            cursor.execute(statement)
        if not self.tables:
            return 0
        params: dict[str, Any] = {
            "from": math.ceil(epoch(window.start)),
            "to": math.ceil(epoch(window.end)),
            **self._names(),
        }
        changes = 0
        with self._session("stage", streaming=True) as cur:
            cur.execute(sql.window_counts(self.db, len(self.tables)), params)
            while rows := cur.fetchmany(self.batch_size):
                changes += sum(int(row[4]) for row in rows)
                lines = [copy_plain(row) for row in rows]
                copy_lines(cursor, counts_sql.copy_counts(), lines)
        return changes

    def classify(self, cursor: Any, params: dict[str, Any], *, window: Window) -> bool:
        """Classify the staged counts into `_cdcr_open`, then find the missed changes'
        messages in Kafka (see the module docstring)."""
        bounds = {"from_s": math.ceil(epoch(window.start)), "to_s": math.ceil(epoch(window.end))}
        schema = self.settings.control_schema
        cursor.execute(counts_sql.classify_counts(schema), {**params, **bounds})
        cursor.execute(counts_sql.missed_identities())
        missed = cursor.fetchall()
        if missed:
            self._locate(cursor, missed)
        return True

    def _locate(self, cursor: Any, missed: list[tuple[Any, ...]]) -> None:
        by_identity: dict[Identity, list[int]] = {}
        for n, change, table, key in missed:
            op, second = change.rsplit(":", 1)[1].split("#", 1)[0].split("@")
            by_identity.setdefault((table, key, op, int(second)), []).append(int(n))

        def not_in_ledger(ids: list[str]) -> set[str]:
            cursor.execute(counts_sql.in_ledger(self.settings.control_schema), {"ids": ids})
            return set(ids) - {row[0] for row in cursor.fetchall()}

        wanted = {identity: len(ns) for identity, ns in by_identity.items()}
        found = find_messages(self.settings, wanted, not_in_ledger)
        rows: list[tuple[Any, ...]] = []
        taken: dict[Identity, int] = {}
        for f in found:
            index = taken.get(f.identity, 0)
            taken[f.identity] = index + 1
            n = by_identity[f.identity][index]
            position = position_literal(f.position)
            rows.append((n, f.change_id, f.tx, position, f.topic, f.partition, f.offset))
        if rows:
            names = ("n", "ids", "txs", "positions", "topics", "partitions", "offsets")
            columns = dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))
            cursor.execute(counts_sql.locate(self.settings.control_schema), columns)

    def prune(self, before: dt.datetime) -> int:
        deleted = 0
        with self._session("prune") as cur:
            while True:
                cur.execute(sql.prune(self.db, PRUNE_CHUNK), {"cutoff": int(epoch(before))})
                cur.connection.commit()
                deleted += int(cur.rowcount)
                if cur.rowcount < PRUNE_CHUNK:
                    return deleted

    # -- helpers -------------------------------------------------------------------

    def _names(self) -> dict[str, str]:
        return sql.table_params(self.tables)

    def _session(self, what: str, *, streaming: bool = False) -> Any:
        return session(self.url, f"source ({what})", refused=SweepError, streaming=streaming)
