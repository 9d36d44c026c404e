"""The sweeper's side of the target database, on one session for the whole run.

The session holds the advisory lock (one sweeper across all instances), the stage
tables (temporary, so private to the run) and the work of each step in one transaction:
stage the window, anti-join it, record the missed changes and advance the watermark.
SQL comes from `cdc_recon.sweep.queries`.

    >>> store = SweepStore(conn, "cdc_recon", pipeline="g", adapter="pg_trigger")  # doctest: +SKIP
    >>> store.try_lock()                                                          # doctest: +SKIP
    True
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cdc_recon.pg.sql import quote_ident
from cdc_recon.sweep import queries as sql
from cdc_recon.sweep.adapters.base import Classified
from cdc_recon.sweep.completeness import count_verified

MISSED_SHOWN = 1000  # change ids a run reports back; all are in missed_changes


@dataclass(frozen=True)
class StepContext:
    """What the classification needs besides the stage."""

    sources: Sequence[str]  # mapped source tables ...
    targets: Sequence[str]  # ... and their target tables, pairwise
    group_id: str
    open_after: dt.datetime  # changes from then on are too recent to judge
    caught_up: bool  # the consumer group has read everything Kafka holds
    ledger_from: dt.datetime  # ledger rows of the window's changes are not older


class SweepStore:
    """Control tables, stage and lock of the sweeper on one target connection."""

    def __init__(self, conn: Any, schema: str, *, pipeline: str, adapter: str) -> None:
        self.conn = conn
        self.schema = schema
        self.pipeline = pipeline
        self.adapter = adapter
        self._staged = False

    def _one(self, statement: str, params: Mapping[str, Any] | None = None) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(statement, params)
            row = cur.fetchone()
        return None if row is None else row[0]

    # -- lock, tables, watermark -----------------------------------------------------

    def try_lock(self) -> bool:
        locked = bool(self._one(sql.try_lock(), {"schema": self.schema}))
        self.conn.commit()
        return locked

    def unlock(self) -> None:
        self._one(sql.unlock(), {"schema": self.schema})
        self.conn.commit()

    def ensure_tables(self) -> None:
        """Create the sweeper's control tables when a deployment predates them."""
        present = self._one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %(schema)s "
            "AND tablename = ANY(%(tables)s)",
            {"schema": self.schema, "tables": list(sql.SWEEPER_TABLES)},
        )
        if present != len(sql.SWEEPER_TABLES):
            with self.conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('cdc_recon.init'))")
                for statement in sql.sweeper_ddl(self.schema):
                    cur.execute(statement)
        self.conn.commit()

    def watermark(self) -> dt.datetime | None:
        found: dt.datetime | None = self._one(
            sql.read_watermark(self.schema), {"pipeline": self.pipeline, "adapter": self.adapter}
        )
        self.conn.commit()
        return found

    def advance_watermark(self, until: dt.datetime) -> None:
        """Within the step's transaction: committed with its findings."""
        with self.conn.cursor() as cur:
            cur.execute(
                sql.store_watermark(self.schema),
                {"pipeline": self.pipeline, "adapter": self.adapter, "until": until},
            )

    def stored_offsets(self, group_id: str) -> dict[tuple[str, int], int]:
        with self.conn.cursor() as cur:
            cur.execute(
                f"SELECT topic, kafka_partition, next_offset FROM {quote_ident(self.schema)}"
                ".offsets WHERE group_id = %(group)s",
                {"group": group_id},
            )
            rows = cur.fetchall()
        self.conn.commit()
        return {(topic, part): offset for topic, part, offset in rows}

    # -- runs ------------------------------------------------------------------------

    def start_run(self) -> int:
        run_id = int(
            self._one(
                sql.start_run(self.schema), {"pipeline": self.pipeline, "adapter": self.adapter}
            )
        )
        self.conn.commit()
        return run_id

    def finish_run(self, run_id: int, record: Mapping[str, Any]) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql.finish_run(self.schema), {**record, "run_id": run_id})
        self.conn.commit()

    # -- one step ----------------------------------------------------------------------

    def _prepare(self) -> None:
        with self.conn.cursor() as cur:
            if not self._staged:
                cur.execute(sql.session_settings())
                for statement in sql.create_stage():
                    cur.execute(statement)
                self._staged = True
            cur.execute(sql.clear_stage())

    def sweep_step(
        self,
        stage: Callable[[Any], int],
        context: StepContext,
        *,
        transactions: bool,
        run_id: int,
        classify: Callable[[Any, dict[str, Any]], bool] | None = None,
    ) -> Classified:
        """Stage (via `stage(cursor)`), classify (by `classify(cursor, params)` when it
        says it did, else by change id) and record one window; not committed."""
        self._prepare()
        with self.conn.cursor() as cur:
            staged = stage(cur)
            params = {
                "sources": list(context.sources),
                "targets": list(context.targets),
                "group": context.group_id,
                "open_after": context.open_after,
                "caught_up": context.caught_up,
                "window_from": context.ledger_from,
                "ledger_from": context.ledger_from,
            }
            if transactions:
                cur.execute(sql.classify_transactions(self.schema), params)
            elif classify is not None and classify(cur, params):
                pass
            else:
                cur.execute(sql.open_entries(self.schema), params)
                cur.execute(sql.analyze_open())
                cur.execute(sql.classify(self.schema), params)
            found = self._counts(cur, staged, transactions)
            cur.execute(sql.record_missed(self.schema), {"adapter": self.adapter, "run_id": run_id})
        return found

    def count_verified(
        self, context: StepContext, *, start: dt.datetime, until: dt.datetime, transactions: bool
    ) -> None:
        """Within the step's transaction: add its changes before `until` (the watermark
        it stores) to the tables' completeness counts."""
        with self.conn.cursor() as cur:
            cur.execute(
                count_verified(self.schema, transactions=transactions),
                {
                    "sources": list(context.sources),
                    "pipeline": self.pipeline,
                    "adapter": self.adapter,
                    "from": start,
                    "until": until,
                },
            )

    def _counts(self, cur: Any, staged: int, transactions: bool) -> Classified:
        cur.execute(sql.open_counts())
        by_class: dict[str, int] = {}
        earliest = None
        for name, count, first in cur.fetchall():
            by_class[name] = count
            earliest = first if first is not None else earliest
        cur.execute(sql.missed_ids(MISSED_SHOWN))
        missed = tuple(row[0] for row in cur.fetchall())
        unapplied = sum(n for name, n in by_class.items() if name != "applied")
        return Classified(
            applied=by_class.get("applied", 0) if transactions else staged - unapplied,
            superseded=by_class.get("superseded", 0),
            missed=by_class.get("missed", 0),
            in_flight=by_class.get("in_flight", 0),
            earliest_in_flight=earliest,
            missed_ids=missed,
        )

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    # -- replay bookkeeping --------------------------------------------------------------

    def pending(self, limit: int) -> list[tuple[Any, ...]]:
        """Replayable missed changes still pending, oldest first (MISSED_COLUMNS order)."""
        with self.conn.cursor() as cur:
            cur.execute(sql.pending_missed(self.schema), {"limit": limit})
            rows: list[tuple[Any, ...]] = cur.fetchall()
        self.conn.commit()
        return rows

    def store_outcomes(self, outcomes: Mapping[str, tuple[str, str]]) -> None:
        """change id → (status, detail)."""
        if not outcomes:
            return
        items = sorted(outcomes.items())
        with self.conn.cursor() as cur:
            cur.execute(
                sql.store_outcomes(self.schema),
                {
                    "ids": [change_id for change_id, _ in items],
                    "statuses": [status for _, (status, _) in items],
                    "details": [detail for _, (_, detail) in items],
                },
            )
        self.conn.commit()
