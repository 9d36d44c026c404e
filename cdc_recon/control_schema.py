"""The control schema in the target: every capability's tables, created by `cdc-recon init`.

    apply      ledger, key_state, offsets, failures   (`cdc_recon.apply.control_tables`)
    sweep      sweeper_watermark, sweep_runs, missed_changes   (`cdc_recon.sweep.queries`)
    reconcile  runs, results, findings, corrections, review queue, jobs
               (`cdc_recon.reconcile.store`)
    retention  prune_state   (`cdc_recon.retention.queries`)
    trace      indexes for one key's rows   (`cdc_recon.trace.queries`)

Each capability owns its DDL; this module, above all of them, only runs it in one
transaction. Every statement is idempotent: `init` may run any number of times. An
unpartitioned ledger of an earlier version is converted in that transaction
(`cdc_recon.apply.ledger_convert`); after it, the ledger's current partition and the
next ones are created (`cdc_recon.apply.ledger`).

    >>> init_control_schema(engine, "cdc_recon")   # doctest: +SKIP
    ['cdc_recon.ledger', 'cdc_recon.key_state', ...]
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from cdc_recon.apply.control_tables import CONTROL_TABLES, control_ddl, ledger_ddl
from cdc_recon.apply.ledger import ensure_partitions
from cdc_recon.apply.ledger_convert import Conversion, convert_unpartitioned
from cdc_recon.apply.ledger_plan import Granularity
from cdc_recon.config.settings import LedgerSettings
from cdc_recon.reconcile.store import RECONCILE_TABLES, reconcile_ddl
from cdc_recon.retention.queries import RETENTION_TABLES, retention_ddl
from cdc_recon.sweep.queries import SWEEPER_TABLES, sweeper_ddl
from cdc_recon.trace.queries import trace_ddl


def init_control_schema(
    engine: sa.Engine,
    schema: str,
    ledger: LedgerSettings | None = None,
    *,
    converted: list[Conversion] | None = None,
) -> list[str]:
    """Create the control schema and tables if absent; returns the tables now present.
    A conversion of an unpartitioned ledger is appended to `converted`."""
    config = ledger or LedgerSettings()
    granularity = Granularity.of(config.partition)
    with engine.begin() as conn:
        # Two instances starting at once must not race on CREATE ... IF NOT EXISTS.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('cdc_recon.init'))"))
        conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
        conversion = convert_unpartitioned(conn, schema, granularity)
        if conversion is not None and converted is not None:
            converted.append(conversion)
        statements = ledger_ddl(schema) + control_ddl(schema)
        statements += sweeper_ddl(schema) + reconcile_ddl(schema) + retention_ddl(schema)
        statements += trace_ddl(schema)  # indexes on the tables above
        for statement in statements:
            conn.execute(sa.text(statement))
    raw = engine.raw_connection()
    try:
        wanted = granularity.ahead(dt.datetime.now(dt.UTC), config.ahead)
        ensure_partitions(raw, schema, wanted, lock_timeout=config.lock_timeout)
    finally:
        raw.close()
    tables = CONTROL_TABLES + SWEEPER_TABLES + RECONCILE_TABLES + RETENTION_TABLES
    return [f"{schema}.{table}" for table in tables]
