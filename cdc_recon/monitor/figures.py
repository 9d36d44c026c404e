"""What the control tables say for the status page, the HTTP API and the metrics.

Every read is cheap on a large deployment: the ledger's size comes from `pg_class`
(an exact count only while it is small), lists are bounded by a `LIMIT` on an indexed
order, and a table that does not exist yet (the sweeper's, the review queue) reads as
empty instead of failing.

    >>> figures = control_figures(engine, "cdc_recon", "cdc-recon")   # doctest: +SKIP
    >>> figures.ledger_rows, figures.missed                           # doctest: +SKIP
    (120034, {'pending': 0, 'replayed': 3})
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from cdc_recon.apply.ledger import LedgerOverview, ledger_overview
from cdc_recon.config import Settings
from cdc_recon.pg.errors import guard as _guard
from cdc_recon.pg.sql import quote_ident
from cdc_recon.sweep.completeness import Completeness, read_completeness
from cdc_recon.sweep.queries import closed_failure

T = TypeVar("T")
EXACT_COUNT_BELOW = 1_000_000  # ledger rows (estimated) under which they are counted
REVIEW_TABLES = ("review_queue", "review_items", "review")  # the reconciliation's queue
Row = dict[str, Any]


@dataclass(frozen=True)
class ControlFigures:
    """The target's control tables summed up; `None` where a table is not there yet."""

    ledger_rows: int = 0
    ledger_exact: bool = True
    open_failures: dict[str, int] = field(default_factory=dict)  # by reason
    missed: dict[str, int] = field(default_factory=dict)  # by replay status
    watermark: dt.datetime | None = None
    last_sweep: Row | None = None
    review_pending: int | None = None
    ledger: LedgerOverview = LedgerOverview()  # its partitions and the next drop
    completeness: Completeness = Completeness()  # what the sweeper verified, per table


def table_exists(conn: sa.Connection, schema: str, table: str) -> bool:
    name = f"{quote_ident(schema)}.{quote_ident(table)}"
    found = conn.execute(sa.text("SELECT to_regclass(:name)"), {"name": name}).scalar()
    return found is not None


def ledger_rows(conn: sa.Connection, schema: str) -> tuple[int, bool]:
    """(rows, exact): the partitions' `pg_class.reltuples` when large, else `count(*)`
    (a partitioned table has no estimate of its own)."""
    name = f"{quote_ident(schema)}.ledger"
    estimate = conn.execute(
        sa.text(
            "SELECT sum(greatest(c.reltuples, 0))::bigint FROM pg_partition_tree("
            "to_regclass(:name)) t JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf"
        ),
        {"name": name},
    ).scalar()
    if estimate is not None and estimate >= EXACT_COUNT_BELOW:
        return int(estimate), False
    return int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar() or 0), True


def _grouped(conn: sa.Connection, sql: str, params: dict[str, Any] | None = None) -> dict[str, int]:
    return {str(k): int(v) for k, v in conn.execute(sa.text(sql), params or {}).all()}


def control_figures(
    engine: sa.Engine, schema: str, group_id: str, settings: Settings | None = None
) -> ControlFigures:
    """One read-only transaction; `DatabaseUnavailable` when the target does not answer.
    With `settings`, the ledger's partitions and next drop too."""
    s = quote_ident(schema)

    def read() -> ControlFigures:
        with engine.connect() as conn:
            rows, exact = ledger_rows(conn, schema)
            failures = _grouped(
                conn, f"SELECT reason, count(*) FROM {s}.failures WHERE status = 'open' GROUP BY 1"
            )
            sweeper = table_exists(conn, schema, "sweep_runs")
            missed = _grouped(conn, missed_by_status(schema)) if sweeper else {}
            watermark = last = None
            if sweeper:
                watermark = conn.execute(
                    sa.text(
                        f"SELECT max(swept_until) FROM {s}.sweeper_watermark WHERE pipeline = :g"
                    ),
                    {"g": group_id},
                ).scalar()
                found = latest_sweeps(conn, schema, 1)
                last = found[0] if found else None
            complete = read_completeness(conn, schema, group_id) if sweeper else Completeness()
            review = _review_pending(conn, schema)
            now = dt.datetime.now(dt.UTC)
            ledger = ledger_overview(conn, settings, now) if settings else LedgerOverview()
        return ControlFigures(
            rows, exact, failures, missed, watermark, last, review, ledger, complete
        )

    return _guard(read)


def missed_by_status(schema: str) -> str:
    """Missed changes by replay status, but for those whose message is a failure an
    operator retried or resolved: they are accounted for (`cdc-recon failures`)."""
    return (
        f"SELECT m.status, count(*) FROM {quote_ident(schema)}.missed_changes m "
        f"WHERE NOT {closed_failure(schema, 'm')} GROUP BY 1"
    )


def _review_table(conn: sa.Connection, schema: str) -> str | None:
    for table in REVIEW_TABLES:
        if table_exists(conn, schema, table):
            return f"{quote_ident(schema)}.{quote_ident(table)}"
    return None


def _review_pending(conn: sa.Connection, schema: str) -> int | None:
    table = _review_table(conn, schema)
    if table is None:
        return None
    columns = _columns(conn, table)
    where = " WHERE status IN ('open', 'pending')" if "status" in columns else ""
    return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}{where}")).scalar() or 0)


def _columns(conn: sa.Connection, table: str) -> set[str]:
    found = conn.execute(sa.text(f"SELECT * FROM {table} LIMIT 0"))
    return set(found.keys())


# -- lists for the API ------------------------------------------------------------------


def _rows(conn: sa.Connection, sql: str, params: dict[str, Any]) -> list[Row]:
    return [dict(row) for row in conn.execute(sa.text(sql), params).mappings()]


def latest_sweeps(conn: sa.Connection, schema: str, limit: int) -> list[Row]:
    if not table_exists(conn, schema, "sweep_runs"):
        return []
    return _rows(
        conn,
        "SELECT id, pipeline, adapter, status, window_from, window_to, started_at, "
        "finished_at, duration_s, applied, superseded, missed, in_flight, replayed, "
        f"replay_failed, detail FROM {quote_ident(schema)}.sweep_runs "
        "ORDER BY id DESC LIMIT :limit",
        {"limit": limit},
    )


def latest_missed(conn: sa.Connection, schema: str, limit: int, status: str | None) -> list[Row]:
    if not table_exists(conn, schema, "missed_changes"):
        return []
    where = "WHERE status = :status " if status else ""
    return _rows(
        conn,
        "SELECT change_id, adapter, source_table, key_text, tx, changed_at, topic, "
        "kafka_partition, kafka_offset, reason, replayable, run_id, found_at, status, "
        f"attempts, last_error, replayed_at FROM {quote_ident(schema)}.missed_changes "
        f"{where}ORDER BY found_at DESC LIMIT :limit",
        {"limit": limit, "status": status},
    )


def missed_by_hour(conn: sa.Connection, schema: str, hours: int) -> list[Row]:
    """Missed changes found per hour over the last `hours`, oldest first."""
    if not table_exists(conn, schema, "missed_changes"):
        return []
    return _rows(
        conn,
        "SELECT date_trunc('hour', found_at) AS hour, count(*) AS found, "
        "count(*) FILTER (WHERE status = 'replayed') AS replayed, "
        "count(*) FILTER (WHERE status = 'failed') AS failed "
        f"FROM {quote_ident(schema)}.missed_changes "
        "WHERE found_at >= now() - make_interval(hours => :hours) GROUP BY 1 ORDER BY 1",
        {"hours": hours},
    )


def review_items(conn: sa.Connection, schema: str, limit: int) -> list[Row] | None:
    """The reconciliation's review queue, newest first; None when it does not exist yet."""
    table = _review_table(conn, schema)
    if table is None:
        return None
    columns = _columns(conn, table)
    order = "id DESC" if "id" in columns else "1 DESC"
    return _rows(conn, f"SELECT * FROM {table} ORDER BY {order} LIMIT :limit", {"limit": limit})


def read_list(engine: sa.Engine, read: Callable[[sa.Connection], T]) -> T:
    """`read(conn)` on a fresh connection; `DatabaseUnavailable` when the target is gone."""

    def run() -> T:
        with engine.connect() as conn:
            return read(conn)

    return _guard(run)
