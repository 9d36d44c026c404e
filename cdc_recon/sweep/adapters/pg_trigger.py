"""Adapter `pg_trigger`: a change-log table in the source, fed by row triggers.

The most direct evidence of what the source changed: every insert, update and delete of
an installed table writes one entry in the changing transaction (see
`cdc_recon.source_db.changelog` for the table, the trigger and how the entry's identity matches
the ledger's). `cdc-recon source install --table public.customers` installs it;
the sweeper reads closed windows of it and prunes what is older than the retention and
already swept.

    >>> log = PgTriggerLog(settings)                       # doctest: +SKIP
    >>> log.install(["public.customers"])                  # doctest: +SKIP
    [Installed(table='public.customers', key=('id',))]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cdc_recon.config import Settings
from cdc_recon.exceptions import ConfigError
from cdc_recon.pg.engine import create_engine
from cdc_recon.pg.raw import raw_connection
from cdc_recon.pg.sql import quote_table
from cdc_recon.pg.transfer import RowWriter, pipe_copy
from cdc_recon.source_db import changelog as sql
from cdc_recon.sweep import queries as sweep_sql
from cdc_recon.sweep.adapters.base import Window


@dataclass(frozen=True)
class Installed:
    table: str
    key: tuple[str, ...]


def qualified(table: str) -> str:
    """`schema.table`; a bare name is taken to be in `public`."""
    return table if "." in table else f"public.{table}"


def source_engine(settings: Settings) -> sa.Engine:
    if settings.source_url is None:
        raise ConfigError(
            "config: source_url: the sweeper needs the source database", key="source_url"
        )
    return create_engine(settings.source_url, name="source")


class PgTriggerLog:
    """The trigger-fed change log of one source database; see the module docstring."""

    name = "pg_trigger"
    unit = "changes"
    transactions = False

    def __init__(self, settings: Settings, engine: sa.Engine | None = None) -> None:
        self.settings = settings
        self.schema = settings.sweeper.changelog_schema
        self.batch_size = settings.sweeper.batch_size
        self.tables = [m.source for m in settings.tables]
        self._owned = engine is None
        self.engine = engine if engine is not None else source_engine(settings)

    def close(self) -> None:
        if self._owned:
            self.engine.dispose()

    # -- install -------------------------------------------------------------------

    def install(self, tables: Sequence[str]) -> list[Installed]:
        """Create the log and a trigger on each of `tables`, in one transaction."""
        done: list[Installed] = []
        with raw_connection(self.engine, name="source") as conn, conn.cursor() as cur:
            cur.execute(sql.install_lock())
            for statement in sql.changelog_ddl(self.schema):
                cur.execute(statement)
            for name in map(qualified, tables):
                key = self._key_columns(cur, name)
                for statement in sql.install_statements(self.schema, name, key):
                    cur.execute(statement)
                done.append(Installed(name, key))
            conn.commit()
        return done

    def _key_columns(self, cur: Any, table: str) -> tuple[str, ...]:
        """The mapping's key (the order events use), else the table's primary key."""
        cur.execute(sql.table_exists(), {"table": quote_table(table)})
        if not cur.fetchone()[0]:
            raise ConfigError(f"source table {table} does not exist", key="tables")
        mapping = self.settings.mapping_for(table)
        if mapping is not None:
            return mapping.key
        cur.execute(sql.primary_key_columns(), {"table": quote_table(table)})
        key = tuple(row[0] for row in cur.fetchall())
        if not key:
            raise ConfigError(
                f"source table {table} has no primary key: map it with a `key`", key="tables"
            )
        return key

    def uninstall(self, tables: Sequence[str] = (), *, drop_log: bool = False) -> list[str]:
        """Remove the triggers of `tables` (all installed ones when empty); `drop_log`
        drops the change-log table too. Returns the tables whose trigger was removed."""
        with raw_connection(self.engine, name="source") as conn, conn.cursor() as cur:
            cur.execute(sql.installed_tables(), {"schema": self.schema})
            installed = [row[0] for row in cur.fetchall()]
            chosen = [qualified(t) for t in tables] if tables else installed
            for name in chosen:
                cur.execute(sql.table_exists(), {"table": quote_table(name)})
                if cur.fetchone()[0]:
                    for statement in sql.uninstall_statements(self.schema, name):
                        cur.execute(statement)
            if drop_log:
                cur.execute(sql.drop_log(self.schema))
            conn.commit()
        return [name for name in chosen if name in installed]

    def installed(self) -> list[str]:
        with raw_connection(self.engine, name="source") as conn, conn.cursor() as cur:
            cur.execute(sql.installed_tables(), {"schema": self.schema})
            return [row[0] for row in cur.fetchall()]

    # -- the sweeper's side --------------------------------------------------------

    def earliest(self) -> dt.datetime | None:
        with raw_connection(self.engine, name="source") as conn, conn.cursor() as cur:
            cur.execute(sql.earliest_change(self.schema), {"tables": self.tables})
            found: dt.datetime | None = cur.fetchone()[0]
            conn.commit()
        return found

    def closed_until(self, grace: float) -> dt.datetime:
        """Also checks, once per run, that the change log is installed."""
        with raw_connection(self.engine, name="source") as conn, conn.cursor() as cur:
            cur.execute(sql.table_exists(), {"table": sql.changes_table(self.schema)})
            if not cur.fetchone()[0]:
                raise ConfigError(
                    f"no change log {self.schema}.changes in the source: run "
                    "`cdc-recon source install --table ...` (or set sweeper.changelog_schema)",
                    key="sweeper.changelog_schema",
                )
            cur.execute(sql.closed_until(), {"grace": grace})
            until: dt.datetime = cur.fetchone()[0]
            conn.commit()
        return until

    def stage(self, cursor: Any, window: Window) -> int:
        """COPY the window's entries from the source into the target's stage, in keyset
        batches of `batch_size` rows streamed through a pipe (never a row at a time)."""
        with raw_connection(self.engine, name="source") as conn:
            loaded = pipe_copy(
                lambda out: self._copy_out(conn, window, out),
                cursor,
                sweep_sql.copy_stage(sweep_sql.TRIGGER_COLUMNS),
            )
            conn.commit()
        return loaded

    def _copy_out(self, conn: Any, window: Window, out: RowWriter) -> None:
        params: dict[str, Any] = {
            "from": window.start,
            "to": window.end,
            "tables": self.tables,
            "limit": self.batch_size,
        }
        with conn.cursor() as cur:
            resume = False
            while True:
                before = out.rows
                cur.copy_expert(cur.mogrify(sql.window_batch(self.schema, resume), params), out)
                if out.rows - before < self.batch_size:
                    return
                last_at, last_id = out.last.rstrip(b"\n").rsplit(b"\t", 2)[1:]
                params.update(last_at=last_at.decode(), last_id=int(last_id))
                resume = True

    def classify(self, cursor: Any, params: dict[str, Any], *, window: Window) -> bool:
        return False  # the sweeper's anti-join by change id

    def prune(self, before: dt.datetime) -> int:
        with raw_connection(self.engine, name="source") as conn, conn.cursor() as cur:
            cur.execute(sql.prune(self.schema), {"cutoff": before})
            deleted: int = cur.rowcount
            conn.commit()
        return deleted
