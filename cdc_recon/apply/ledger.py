"""The ledger's partitions by source time: created ahead and on demand, dropped when swept.

The ledger (`cdc_recon.apply.control_tables`) is range-partitioned on `source_ts`, one
partition per hour, day or week (`ledger.partition`). There is no DEFAULT partition: a
change whose source time has no partition fails its batch's COPY ("no partition of
relation"), and the applier creates the missing partitions and writes the batch again
(`Applier.write`). A DEFAULT partition would take far past or future times too, but it
makes every later partition of its range impossible to create until its rows are moved
out, and PostgreSQL refuses DETACH ... CONCURRENTLY on a table that has one.

**Uniqueness (P2).** A unique index of a partitioned table must hold the partition key,
so the ledger's is `(split_part(change_id, ':', -1), change_id, source_ts)`: a change id
is unique within its source time. That is "nothing applied twice" because every delivery
of one change carries the same source time: it is Debezium's `source.ts_ms`, the
commit time in the source's log, the same bytes on a redelivery, a connector restart
re-streaming the log, and `replay --source kafka` (the same message read again). A
`replay --source source-db` re-read is a new change: the re-reading transaction's xid
is in its change id, and its position (the WAL LSN of the read) orders it. The applier
writes `source_ts` from the same milliseconds on every path, exactly (`encode.
source_ts_text`, `statements.source_ts`), so a redelivery meets its first row in the
index of the partition that holds it.

**Creating** (`ensure_partitions`, on the applier's connection or the maintenance
thread's), one transaction per wanted bucket, `lock_timeout` `ledger.lock_timeout`:
C1. take the transaction advisory lock of ledger creation (instances do not race);
C2. list the partitions; the wanted bucket minus what they cover is what to create
    (a changed `ledger.partition` fills only gaps);
C3. CREATE TABLE ... (LIKE ledger), its two indexes (named after it, so the applier
    recognises a redelivery by the index name), then ATTACH PARTITION, which takes
    SHARE UPDATE EXCLUSIVE on the ledger: the applier's writes (ROW EXCLUSIVE) go on.
A crash anywhere rolls the transaction back: nothing half made is left.

**Dropping** (`maintain_ledger`), oldest first, only a partition that ends at least
`ledger.retention` before now AND `sweeper.grace` + `LEDGER_SLACK` before the oldest
sweeper watermark (P1: never prune what was not swept; no watermark, nothing dropped,
unless `ledger.drop_unswept`):
D1. mark it `COMMENT ... 'cdc_recon: dropping'` (the intent, for a crash after D2);
D2. ALTER TABLE ledger DETACH PARTITION ... CONCURRENTLY (no transaction block): new
    queries stop seeing it at once, then it waits for the transactions that still may;
    it never blocks the applier's writes;
D3. DROP TABLE (no lock on the ledger any more).
A lock timeout stops the run; the next run goes on. A crash after D1 leaves a marked
partition: the next run re-checks it and goes on with D2. A crash inside D2 leaves it
detach-pending: the next run FINALIZEs it and drops it. A crash after D2 leaves a
marked table outside the ledger: the next run drops it (a table detached by hand has no
mark and is left alone). While a partition is going, a change of its range cannot find
a partition to go to: its batch is retried until the drop is done; after it, a change
that old gets a new partition (dropped by the next run) and is guarded by its key's
position alone, like any change older than the retention.

    >>> done = maintain_ledger(engine, settings, dt.datetime.now(dt.UTC))  # doctest: +SKIP
    >>> done.created, done.dropped                                         # doctest: +SKIP
    (['ledger_p20261207'], ['ledger_p20261126'])
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from cdc_recon.apply.ledger_plan import (
    CHANGE_ID_INDEX,
    LEDGER_SLACK,
    Granularity,
    Partition,
    Range,
    Retention,
    gaps,
    partition_name,
)
from cdc_recon.config import Settings
from cdc_recon.config.settings import LedgerSettings
from cdc_recon.pg import errors as pg_errors
from cdc_recon.pg.sql import change_id_order, quote_ident, quote_literal

LOG = logging.getLogger("cdc_recon.ledger")
DROPPING = "cdc_recon: dropping"  # the mark of D1
CREATE_LOCK = "hashtext('cdc_recon.ledger.create'), hashtext(%(schema)s)"
MAINTAIN_LOCK = "hashtext('cdc_recon.ledger.maintain'), hashtext(%(schema)s)"


def _ledger(schema: str) -> str:
    return f"{quote_ident(schema)}.ledger"


def list_partitions_sql() -> str:
    """(name, start, end, estimated rows, detach pending) of the ledger's partitions."""
    return (
        "SELECT c.relname, b[1]::timestamptz, b[2]::timestamptz, "
        "greatest(c.reltuples, 0)::bigint, i.inhdetachpending "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid CROSS JOIN LATERAL "
        "regexp_match(pg_get_expr(c.relpartbound, c.oid), "
        "'FROM \\(''([^'']*)''\\) TO \\(''([^'']*)''\\)') AS b "
        "WHERE i.inhparent = to_regclass(%(ledger)s) ORDER BY 2"
    )


def list_partitions(cur: Any, schema: str) -> list[Partition]:
    cur.execute(list_partitions_sql(), {"ledger": _ledger(schema)})
    return [
        Partition(n, s.astimezone(dt.UTC), e.astimezone(dt.UTC), int(r), bool(p))
        for n, s, e, r, p in cur.fetchall()
    ]


def partition_ddl(schema: str, start: dt.datetime, end: dt.datetime) -> list[str]:
    """Step C3 for one range: the table, its indexes (named after it), the ATTACH."""
    s = quote_ident(schema)
    name = partition_name(start)
    suffix = name.removeprefix("ledger_")
    table = f"{s}.{quote_ident(name)}"
    bounds = f"FROM ({quote_literal(start.isoformat())}) TO ({quote_literal(end.isoformat())})"
    return [
        f"CREATE TABLE {table} (LIKE {s}.ledger INCLUDING DEFAULTS)",
        f"CREATE UNIQUE INDEX {quote_ident(f'{CHANGE_ID_INDEX}_{suffix}')} ON {table} "
        f"({change_id_order('change_id')}, change_id, source_ts)",
        f"CREATE INDEX {quote_ident(f'ledger_source_ts_{suffix}')} ON {table} "
        "USING brin (source_ts)",
        f"ALTER TABLE {s}.ledger ATTACH PARTITION {table} FOR VALUES {bounds}",
    ]


def ensure_partitions(
    conn: Any, schema: str, wanted: Iterable[Range], *, lock_timeout: float
) -> list[str]:
    """Steps C1-C3 for each wanted range, one transaction each, committed; returns the
    partitions created. A driver error (a lock timeout) is raised after a rollback."""
    created: list[str] = []
    for want in wanted:
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET LOCAL lock_timeout = {int(lock_timeout * 1000)}")
                cur.execute(f"SELECT pg_advisory_xact_lock({CREATE_LOCK})", {"schema": schema})
                existing = [(p.start, p.end) for p in list_partitions(cur, schema)]
                for start, end in gaps(want, existing):
                    for statement in partition_ddl(schema, start, end):
                        cur.execute(statement)
                    created.append(partition_name(start))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    if created:
        LOG.info("ledger: created partitions %s", ", ".join(created))
    return created


def cover(
    engine: sa.Engine,
    schema: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    partition: str = "day",
    lock_timeout: float = 1.0,
) -> list[str]:
    """Partitions for all source times from `start` to `end`: for writers of ledger rows
    other than the applier (a backfill, tests, benchmarks), which would otherwise meet
    "no partition of relation"."""
    size = Granularity.of(partition)
    wanted, low = [], size.bucket(start)[0]
    while low <= end:
        wanted.append((low, low + size.length))
        low += size.length
    raw = engine.raw_connection()
    try:
        return ensure_partitions(raw, schema, wanted, lock_timeout=lock_timeout)
    finally:
        raw.close()


def read_watermark(cur: Any, schema: str) -> dt.datetime | None:
    """The oldest sweeper watermark in the schema (`sweep.queries`' table, read by name:
    the sweeper sits above this package). Every pipeline and adapter that sweeps this
    ledger must have passed a partition before it goes."""
    cur.execute("SELECT to_regclass(%(t)s)", {"t": f"{quote_ident(schema)}.sweeper_watermark"})
    row = cur.fetchone()
    if row is None or row[0] is None:
        return None
    cur.execute(f"SELECT min(swept_until) FROM {quote_ident(schema)}.sweeper_watermark")
    found = cur.fetchone()
    return None if found is None else found[0]


def retention_of(settings: Settings) -> Retention:
    ledger = settings.ledger
    margin = dt.timedelta(seconds=settings.sweeper.grace + LEDGER_SLACK)
    return Retention(dt.timedelta(seconds=ledger.retention), margin, ledger.drop_unswept)


@dataclass
class LedgerMaintenance:
    """What one `maintain_ledger` run did."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    waiting: str = ""  # why the run stopped early (a lock timeout): the next run goes on
    skipped: bool = False  # another instance holds the maintenance lock

    def summary(self) -> str:
        if self.skipped:
            return "skipped (another instance maintains the ledger)"
        wait = f"; stopped: {self.waiting}" if self.waiting else ""
        return f"created {self.created or 'none'}, dropped {self.dropped or 'none'}{wait}"


@contextlib.contextmanager
def _maintenance_connection(engine: sa.Engine, schema: str) -> Iterator[Any | None]:
    """A driver connection holding the maintenance lock, or None when another has it."""
    fairy: Any = engine.raw_connection()
    try:
        with fairy.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(f"SELECT pg_try_advisory_lock({MAINTAIN_LOCK})", {"schema": schema})
            locked = bool(cur.fetchone()[0])
        fairy.commit()
        yield fairy if locked else None
    finally:
        with contextlib.suppress(Exception):
            fairy.invalidate()  # the session lock goes with the session


def maintain_ledger(engine: sa.Engine, settings: Settings, now: dt.datetime) -> LedgerMaintenance:
    """One maintenance run: finish interrupted drops, create the partitions of `now` and
    `ledger.ahead` after it, drop the expired ones (see the module docstring)."""
    schema, config = settings.control_schema, settings.ledger
    done = LedgerMaintenance()
    with _maintenance_connection(engine, schema) as conn:
        if conn is None:
            done.skipped = True
            return done
        try:
            wanted = Granularity.of(config.partition).ahead(now, config.ahead)
            done.created = ensure_partitions(conn, schema, wanted, lock_timeout=config.lock_timeout)
            _drop_expired(conn, schema, retention_of(settings), now, config, done)
        except pg_errors.DriverError as exc:
            if not pg_errors.is_lock_timeout(exc):
                raise
            done.waiting = pg_errors.first_line(exc)
            LOG.info("ledger maintenance waits for a lock, retrying later: %s", done.waiting)
    return done


def _drop_expired(
    conn: Any,
    schema: str,
    retention: Retention,
    now: dt.datetime,
    config: LedgerSettings,
    done: LedgerMaintenance,
) -> None:
    with conn.cursor() as cur:
        _set_lock_timeout(cur, config.lock_timeout)
        watermark = read_watermark(cur, schema)
        partitions = list_partitions(cur, schema)
        orphans = _marked_orphans(cur, schema)
    conn.commit()
    for name in orphans:  # crash after D2: only D3 is left
        _drop_table(conn, schema, name)
        done.dropped.append(name)
    for partition in retention.expired(partitions, now, watermark):
        _detach_and_drop(conn, schema, partition)
        done.dropped.append(partition.name)
        LOG.info(
            "ledger: dropped partition %s [%s, %s), ~%d rows",
            partition.name,
            partition.start.isoformat(),
            partition.end.isoformat(),
            partition.rows,
        )


def _set_lock_timeout(cur: Any, seconds: float) -> None:
    cur.execute(f"SET lock_timeout = {int(seconds * 1000)}")


def _marked_orphans(cur: Any, schema: str) -> list[str]:
    """Tables marked by D1 that are no longer partitions of the ledger (D2 done)."""
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %(schema)s AND c.relkind = 'r' AND c.relname ~ '^ledger_p[0-9]' "
        "AND NOT c.relispartition AND obj_description(c.oid, 'pg_class') = %(mark)s",
        {"schema": schema, "mark": DROPPING},
    )
    return [row[0] for row in cur.fetchall()]


def _detach_and_drop(conn: Any, schema: str, partition: Partition) -> None:
    """Steps D1-D3 for one partition (a detach-pending one resumes with FINALIZE)."""
    table = f"{quote_ident(schema)}.{quote_ident(partition.name)}"
    with conn.cursor() as cur:
        cur.execute(f"COMMENT ON TABLE {table} IS {quote_literal(DROPPING)}")
    conn.commit()
    how = "FINALIZE" if partition.detaching else "CONCURRENTLY"
    driver = conn.driver_connection
    driver.autocommit = True  # DETACH ... CONCURRENTLY refuses a transaction block
    try:
        with conn.cursor() as cur:
            cur.execute(f"ALTER TABLE {_ledger(schema)} DETACH PARTITION {table} {how}")
    finally:
        driver.autocommit = False
    _drop_table(conn, schema, partition.name)


def _drop_table(conn: Any, schema: str, name: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {quote_ident(schema)}.{quote_ident(name)}")
    conn.commit()


# -- what status and /metrics show -------------------------------------------------------


@dataclass(frozen=True)
class LedgerOverview:
    """The partitions, the oldest kept, and the next drop and when it is due (None:
    when the sweeper's watermark passes its end; `drop_unswept` drops by age alone)."""

    partitions: Sequence[Partition] = ()
    watermark: dt.datetime | None = None
    next_drop: Partition | None = None
    next_drop_at: dt.datetime | None = None

    @property
    def oldest_kept(self) -> dt.datetime | None:
        return min((p.start for p in self.partitions), default=None)

    def as_dict(self) -> dict[str, Any]:
        iso = _iso
        return {
            "partitions": [
                {"name": p.name, "from": iso(p.start), "to": iso(p.end), "rows": p.rows}
                | ({"detaching": True} if p.detaching else {})
                for p in self.partitions
            ],
            "oldest_kept": iso(self.oldest_kept),
            "watermark": iso(self.watermark),
            "next_drop": None if self.next_drop is None else self.next_drop.name,
            "next_drop_at": iso(self.next_drop_at),
        }


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def ledger_overview(conn: sa.Connection, settings: Settings, now: dt.datetime) -> LedgerOverview:
    """Read on an SQLAlchemy connection (status, the poller)."""
    cur = conn.connection.cursor()
    try:
        partitions = list_partitions(cur, settings.control_schema)
        watermark = read_watermark(cur, settings.control_schema)
    finally:
        cur.close()
    nxt = retention_of(settings).next_drop(partitions, now, watermark)
    if nxt is None:
        return LedgerOverview(partitions, watermark)
    return LedgerOverview(partitions, watermark, nxt[0], nxt[1])
