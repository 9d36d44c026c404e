"""Daily figures per source table from the control tables, for `cdc-recon report`.

Days are UTC. Ledger rows count by their source time (`source_ts`, BRIN-indexed), so a
day's figures say what the source changed that day and how it arrived; failures and
missed changes count by when they were recorded.

    >>> rows = daily_counts(engine, "cdc_recon", start, days=7)   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from cdc_recon.monitor.figures import table_exists
from cdc_recon.pg.errors import guard as _guard
from cdc_recon.pg.sql import quote_ident

DailyCounts = dict[tuple[dt.date, str], dict[str, int]]  # (day, table) → figure → count


@contextmanager
def _connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as conn:
        yield conn


def _add(found: DailyCounts, rows: Any, figure: str) -> None:
    for day, table, count in rows:
        found.setdefault((day, table or "?"), {})[figure] = int(count)


def daily_counts(engine: sa.Engine, schema: str, start: dt.date, days: int) -> DailyCounts:
    """Per UTC day and source table: applied, superseded, failures, missed (and replayed)."""
    s = quote_ident(schema)
    window = {
        "start": dt.datetime.combine(start, dt.time(), dt.UTC),
        "end": dt.datetime.combine(start + dt.timedelta(days=days), dt.time(), dt.UTC),
    }

    def day(column: str) -> str:
        return f"(({column}) AT TIME ZONE 'UTC')::date"

    def read() -> DailyCounts:
        found: DailyCounts = {}
        with _connection(engine) as conn:
            ledger = conn.execute(
                sa.text(
                    f"SELECT {day('source_ts')}, source_table, outcome, count(*) FROM {s}.ledger "
                    "WHERE source_ts >= :start AND source_ts < :end GROUP BY 1, 2, 3"
                ),
                window,
            ).all()
            for outcome in ("applied", "superseded"):
                _add(found, [(d, t, n) for d, t, o, n in ledger if o == outcome], outcome)
            failures = conn.execute(
                sa.text(
                    f"SELECT {day('created_at')}, source_table, count(*) FROM {s}.failures "
                    "WHERE created_at >= :start AND created_at < :end GROUP BY 1, 2"
                ),
                window,
            ).all()
            _add(found, failures, "failures")
            if table_exists(conn, schema, "missed_changes"):
                missed = conn.execute(
                    sa.text(
                        f"SELECT {day('found_at')}, source_table, count(*), "
                        "count(*) FILTER (WHERE status = 'replayed') FROM "
                        f"{s}.missed_changes WHERE found_at >= :start AND found_at < :end "
                        "GROUP BY 1, 2"
                    ),
                    window,
                ).all()
                _add(found, [(d, t, n) for d, t, n, _ in missed], "missed")
                _add(found, [(d, t, r) for d, t, _, r in missed], "replayed")
        return found

    return _guard(read)


def sweep_summary(engine: sa.Engine, schema: str, start: dt.date, days: int) -> dict[str, Any]:
    """Sweeper runs started in the window: how many, failed, missed, replayed, seconds."""
    s = quote_ident(schema)

    def read() -> dict[str, Any]:
        with _connection(engine) as conn:
            if not table_exists(conn, schema, "sweep_runs"):
                return {"runs": 0, "failed": 0, "missed": 0, "replayed": 0, "seconds": 0.0}
            row = conn.execute(
                sa.text(
                    "SELECT count(*), count(*) FILTER (WHERE status = 'failed'), "
                    "coalesce(sum(missed), 0), coalesce(sum(replayed), 0), "
                    f"coalesce(sum(duration_s), 0) FROM {s}.sweep_runs "
                    "WHERE started_at >= :start AND started_at < :end"
                ),
                {
                    "start": dt.datetime.combine(start, dt.time(), dt.UTC),
                    "end": dt.datetime.combine(start + dt.timedelta(days=days), dt.time(), dt.UTC),
                },
            ).one()
        runs, failed, missed, replayed, seconds = row
        return {
            "runs": int(runs),
            "failed": int(failed),
            "missed": int(missed),
            "replayed": int(replayed),
            "seconds": round(float(seconds), 3),
        }

    return _guard(read)
