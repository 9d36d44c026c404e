"""The ledger's recent changes, per target table and time bucket, for the anomaly check.

One statement aggregates the window inside the target (the ledger's BRIN index on
`source_ts` bounds the scan); only one row per table and non-empty bucket leaves it.

    >>> with engine.connect() as conn:                                   # doctest: +SKIP
    ...     end, rows = ledger_activity(conn, "cdc_recon", 604800, 3600)
    >>> rows[0]                                                          # doctest: +SKIP
    BucketActivity(table='public.orders', bucket=0, changes=118, inserts=40, ...)
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import sqlalchemy as sa

from cdc_recon.pg.sql import quote_ident
from cdc_recon.reconcile.activity import BucketActivity


def has_ledger(conn: sa.Connection, schema: str) -> bool:
    """Whether the control schema holds a ledger (`cdc-recon init` or the service made it)."""
    name = f"{quote_ident(schema)}.ledger"
    return conn.exec_driver_sql("SELECT to_regclass(%(n)s)", {"n": name}).scalar() is not None


def ledger_activity(
    conn: sa.Connection,
    schema: str,
    lookback: float,
    bucket: float,
    tables: Sequence[str] = (),
) -> tuple[dt.datetime, list[BucketActivity]]:
    """The window's end (the database's `now()`) and, per target table and bucket of
    `bucket` seconds in the `lookback` seconds before it, what the ledger holds.

    Bucket i covers [end - (n - i) * bucket, end - (n - i - 1) * bucket), n the number
    of buckets; `tables` (source or target names) narrows the tables when given.
    """
    end = conn.exec_driver_sql("SELECT now()").scalar_one()
    buckets = math.ceil(lookback / bucket)
    start = end - dt.timedelta(seconds=buckets * bucket)
    only = "AND (target_table = ANY(%(tables)s) OR source_table = ANY(%(tables)s))"
    sql = f"""
        SELECT target_table,
               floor(extract(epoch FROM source_ts - %(start)s) / %(bucket)s)::int AS b,
               count(*),
               count(*) FILTER (WHERE op IN ('c', 'r')),
               count(*) FILTER (WHERE op = 'u'),
               count(*) FILTER (WHERE op = 'd'),
               count(*) FILTER (WHERE outcome = 'superseded'),
               count(DISTINCT key_text),
               count(DISTINCT tx),
               percentile_cont(0.5) WITHIN GROUP
                   (ORDER BY extract(epoch FROM applied_at - source_ts))
        FROM {quote_ident(schema)}.ledger
        WHERE source_ts >= %(start)s AND source_ts < %(end)s {only if tables else ""}
        GROUP BY 1, 2 ORDER BY 1, 2"""
    params = {"start": start, "end": end, "bucket": bucket, "tables": list(tables)}
    rows = conn.exec_driver_sql(sql, params).all()
    return end, [
        BucketActivity(
            table=row[0],
            bucket=min(int(row[1]), buckets - 1),
            changes=int(row[2]),
            inserts=int(row[3]),
            updates=int(row[4]),
            deletes=int(row[5]),
            superseded=int(row[6]),
            keys=int(row[7]),
            transactions=int(row[8]),
            lag_p50=float(row[9]) if row[9] is not None else None,
        )
        for row in rows
    ]
