"""`cdc-recon init` on a ledger of an earlier version: one table, not partitioned.

The old table becomes the first partition of the new ledger, its rows in place, in the
init transaction (so a failure anywhere leaves the old ledger as it was):

1. bring it up to the last unpartitioned version (`source_ts` a plain column, no
   primary key) and lock it (ACCESS EXCLUSIVE: the applier waits for init);
2. read its source times' range; an empty ledger is simply dropped;
3. rename it `ledger_p<first day>` and build its unique index with the partition key
   (`(split_part(change_id, ':', -1), change_id, source_ts)`; the long step: about
   the time of one index build over the rows), drop the old one;
4. create the partitioned ledger and ATTACH the old table for `[start of the bucket of
   its oldest row, end of the bucket of its newest)`: one scan that checks the range.

Its rows are kept until that whole range has expired and been swept; new partitions
start where it ends. A table whose columns this version does not know is refused with
what to do instead.

    >>> done = convert_unpartitioned(conn, "cdc_recon", Granularity.of("day"))  # doctest: +SKIP
    >>> done.rows, done.seconds                                                 # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import sqlalchemy as sa

from cdc_recon.apply.control_tables import ledger_ddl
from cdc_recon.apply.ledger_plan import CHANGE_ID_INDEX, Granularity, partition_name
from cdc_recon.exceptions import ConfigError
from cdc_recon.pg.sql import change_id_order, quote_ident, quote_literal

KNOWN_COLUMNS = {
    "change_id",
    "source_table",
    "target_table",
    "key_text",
    "op",
    "position",
    "tx",
    "source_ts_ms",
    "source_ts",
    "topic",
    "kafka_partition",
    "kafka_offset",
    "outcome",
    "applied_at",
}


@dataclass(frozen=True)
class Conversion:
    """What converting an unpartitioned ledger did."""

    partition: str | None  # the old table's name as a partition (None: it was empty)
    rows: int
    seconds: float
    start: dt.datetime | None = None
    end: dt.datetime | None = None


def ledger_kind(conn: sa.Connection, schema: str) -> str | None:
    """`r` (a plain table: an earlier version), `p` (partitioned) or None (absent)."""
    found = conn.execute(
        sa.text(
            "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relname = 'ledger'"
        ),
        {"schema": schema},
    ).scalar()
    return None if found is None else str(found)


def convert_unpartitioned(
    conn: sa.Connection, schema: str, granularity: Granularity
) -> Conversion | None:
    """Steps 1-4 inside the caller's transaction; None when there is nothing to convert."""
    if ledger_kind(conn, schema) != "r":
        return None
    started = time.monotonic()
    s = quote_ident(schema)
    run = conn.exec_driver_sql
    run(f"ALTER TABLE {s}.ledger ALTER COLUMN source_ts DROP EXPRESSION IF EXISTS")
    run(f"ALTER TABLE {s}.ledger DROP CONSTRAINT IF EXISTS ledger_pkey")
    run(f"ALTER TABLE {s}.ledger ALTER COLUMN source_ts SET NOT NULL")  # once generated
    run(f"LOCK TABLE {s}.ledger IN ACCESS EXCLUSIVE MODE")
    _refuse_unknown_columns(conn, schema)
    low, high, rows = run(f"SELECT min(source_ts), max(source_ts), count(*) FROM {s}.ledger").one()
    if not rows:
        run(f"DROP TABLE {s}.ledger")
        return Conversion(None, 0, time.monotonic() - started)
    start, end = granularity.bucket(low)[0], granularity.bucket(high)[1]
    name = partition_name(start)
    suffix = name.removeprefix("ledger_")
    table = f"{s}.{quote_ident(name)}"
    run(f"ALTER TABLE {s}.ledger RENAME TO {quote_ident(name)}")
    run(f"ALTER INDEX IF EXISTS {s}.ledger_source_ts RENAME TO ledger_source_ts_{suffix}")
    run(
        f"CREATE UNIQUE INDEX {CHANGE_ID_INDEX}_{suffix} ON {table} "
        f"({change_id_order('change_id')}, change_id, source_ts)"
    )
    run(f"DROP INDEX IF EXISTS {s}.{CHANGE_ID_INDEX}")
    run(f"CREATE INDEX IF NOT EXISTS ledger_source_ts_{suffix} ON {table} USING brin (source_ts)")
    for statement in ledger_ddl(schema):
        run(statement)
    bounds = f"FROM ({quote_literal(start.isoformat())}) TO ({quote_literal(end.isoformat())})"
    run(f"ALTER TABLE {s}.ledger ATTACH PARTITION {table} FOR VALUES {bounds}")
    return Conversion(name, int(rows), time.monotonic() - started, start, end)


def _refuse_unknown_columns(conn: sa.Connection, schema: str) -> None:
    columns = conn.execute(
        sa.text(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t) "
            "AND attnum > 0 AND NOT attisdropped"
        ),
        {"t": f"{quote_ident(schema)}.ledger"},
    ).scalars()
    unknown = sorted(set(columns) - KNOWN_COLUMNS)
    if unknown:
        raise ConfigError(
            f"cannot partition {schema}.ledger: it has columns this version does not know "
            f"({', '.join(unknown)}); rename it (ALTER TABLE {schema}.ledger RENAME TO "
            "ledger_old), run `cdc-recon init` again, and copy its rows in with INSERT ... "
            "SELECT",
            key="control_schema",
        )
