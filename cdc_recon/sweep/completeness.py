"""Is my data complete? The share of verified source changes that reached the target.

Of the source changes in the windows the sweeper has closed (behind its watermark;
counted per table in `sweep_completeness` by each step, `count_verified`), the
share applied or superseded: `(verified - still missing) / verified`, where still
missing is a missed change not replayed yet (pending or failed) and not a quarantined
message an operator retried or resolved. A missed change replayed later counts as
applied. The oldest unverified change is the oldest one still missing, or else the
first change after the watermark (nothing after it is proven yet): its age grows when
the sweeper stops or a change stays missing.

    >>> found = read_completeness(engine, "cdc_recon", "cdc-recon")   # doctest: +SKIP
    >>> found.overall.ratio, found.overall.missing                     # doctest: +SKIP
    (0.99998, 2)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cdc_recon.pg.sql import quote_ident
from cdc_recon.sweep.queries import OPEN, STAGE, closed_failure

OVERALL = "(all)"  # the label of the figure over every table


@dataclass(frozen=True)
class TableCompleteness:
    table: str
    verified: int
    missing: int  # still missing: found missed and neither replayed nor closed
    oldest_unverified: dt.datetime | None  # None: nothing verified, nothing missing

    @property
    def ratio(self) -> float | None:
        """Share of the verified changes applied or superseded; None before any."""
        if self.verified <= 0:
            return None
        return max(self.verified - self.missing, 0) / self.verified

    def age_seconds(self, now: dt.datetime) -> float | None:
        if self.oldest_unverified is None:
            return None
        return max((now - self.oldest_unverified).total_seconds(), 0.0)

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "table": self.table,
            "verified": self.verified,
            "missing": self.missing,
            "ratio": self.ratio,
            "oldest_unverified": self.oldest_unverified.isoformat()
            if self.oldest_unverified
            else None,
            "oldest_unverified_age_seconds": self.age_seconds(now),
        }


@dataclass(frozen=True)
class Completeness:
    tables: tuple[TableCompleteness, ...] = ()

    @property
    def overall(self) -> TableCompleteness:
        return combine(self.tables)

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "overall": self.overall.as_dict(now),
            "tables": [t.as_dict(now) for t in self.tables],
        }


def combine(tables: Iterable[TableCompleteness]) -> TableCompleteness:
    """The figure over `tables` (pure): sums, and the oldest unverified change of all."""
    items = list(tables)
    moments = [t.oldest_unverified for t in items if t.oldest_unverified is not None]
    return TableCompleteness(
        OVERALL,
        sum(t.verified for t in items),
        sum(t.missing for t in items),
        min(moments) if moments else None,
    )


def count_verified(schema: str, *, transactions: bool) -> str:
    """Add the step's changes older than `%(until)s` (the watermark it stores) to each
    table's counts: every staged entry is verified, the open ones by their class, the
    rest were in the ledger (applied). The transaction adapter stages transactions, all
    of which are open entries."""
    table = "coalesce(s.source_table, (%(sources)s::text[])[s.table_no])"
    staged = (
        f"SELECT source_table, count(*) AS n FROM {OPEN} s WHERE changed_at < %(until)s GROUP BY 1"
        if transactions
        else f"SELECT {table} AS source_table, count(*) AS n FROM {STAGE} s "
        "WHERE s.changed_at < %(until)s GROUP BY 1"
    )
    return f"""
WITH staged AS ({staged}),
judged AS (SELECT source_table, count(*) FILTER (WHERE class = 'superseded') AS superseded,
    count(*) FILTER (WHERE class = 'missed') AS missed
    FROM {OPEN} WHERE changed_at < %(until)s GROUP BY 1)
INSERT INTO {quote_ident(schema)}.sweep_completeness AS c (pipeline, adapter, source_table,
    verified, applied, superseded, missed, since, swept_until)
SELECT %(pipeline)s, %(adapter)s, st.source_table, st.n,
    st.n - coalesce(j.superseded, 0) - coalesce(j.missed, 0), coalesce(j.superseded, 0),
    coalesce(j.missed, 0), %(from)s, %(until)s
FROM staged st LEFT JOIN judged j ON j.source_table = st.source_table
WHERE st.source_table IS NOT NULL
ON CONFLICT (pipeline, adapter, source_table) DO UPDATE SET
    verified = c.verified + EXCLUDED.verified, applied = c.applied + EXCLUDED.applied,
    superseded = c.superseded + EXCLUDED.superseded, missed = c.missed + EXCLUDED.missed,
    swept_until = greatest(c.swept_until, EXCLUDED.swept_until), updated_at = now()"""


def completeness_sql(schema: str) -> str:
    """Per source table of the pipeline: verified changes, those still missing, the
    oldest of them, and the watermark (`%(pipeline)s`)."""
    s = quote_ident(schema)
    return f"""
WITH counted AS (
    SELECT c.source_table, sum(c.verified) AS verified, min(w.swept_until) AS swept_until,
        array_agg(DISTINCT c.adapter) AS adapters
    FROM {s}.sweep_completeness c
    JOIN {s}.sweeper_watermark w ON w.pipeline = c.pipeline AND w.adapter = c.adapter
    WHERE c.pipeline = %(pipeline)s GROUP BY 1),
missing AS (
    SELECT m.source_table, count(*) AS n, min(m.changed_at) AS oldest
    FROM {s}.missed_changes m
    WHERE m.status <> 'replayed' AND NOT {closed_failure(schema, "m")}
    AND m.source_table IN (SELECT source_table FROM counted)
    GROUP BY 1)
SELECT c.source_table, c.verified, coalesce(m.n, 0),
    least(coalesce(m.oldest, c.swept_until), c.swept_until)
FROM counted c LEFT JOIN missing m ON m.source_table = c.source_table
ORDER BY 1"""


def read_completeness(conn: sa.Connection, schema: str, pipeline: str) -> Completeness:
    """The pipeline's figures; empty when the sweeper has not counted anything yet."""
    name = f"{quote_ident(schema)}.sweep_completeness"
    if conn.execute(sa.text("SELECT to_regclass(:n)"), {"n": name}).scalar() is None:
        return Completeness()
    rows = conn.exec_driver_sql(completeness_sql(schema), {"pipeline": pipeline}).all()
    return Completeness(
        tuple(TableCompleteness(str(t), int(v), int(n), oldest) for t, v, n, oldest in rows)
    )
