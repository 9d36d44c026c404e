"""The control schema in the target: every capability's tables, created by `cdc-recon init`.

    apply      ledger, key_state, offsets, failures   (`cdc_recon.apply.control_tables`)
    sweep      sweeper_watermark, sweep_runs, missed_changes   (`cdc_recon.sweep.queries`)
    reconcile  runs, results, findings, corrections, review queue, jobs
               (`cdc_recon.reconcile.store`)
    retention  prune_state   (`cdc_recon.retention.queries`)

Each capability owns its DDL; this module, above all of them, only runs it in one
transaction. Every statement is idempotent: `init` may run any number of times.

    >>> init_control_schema(engine, "cdc_recon")   # doctest: +SKIP
    ['cdc_recon.ledger', 'cdc_recon.key_state', ...]
"""

from __future__ import annotations

import sqlalchemy as sa

from cdc_recon.apply.control_tables import CONTROL_TABLES, control_ddl
from cdc_recon.reconcile.store import RECONCILE_TABLES, reconcile_ddl
from cdc_recon.retention.queries import RETENTION_TABLES, retention_ddl
from cdc_recon.sweep.queries import SWEEPER_TABLES, sweeper_ddl


def init_control_schema(engine: sa.Engine, schema: str) -> list[str]:
    """Create the control schema and tables if absent; returns the tables now present."""
    with engine.begin() as conn:
        # Two instances starting at once must not race on CREATE ... IF NOT EXISTS.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('cdc_recon.init'))"))
        statements = control_ddl(schema) + sweeper_ddl(schema) + reconcile_ddl(schema)
        for statement in statements + retention_ddl(schema):
            conn.execute(sa.text(statement))
    tables = CONTROL_TABLES + SWEEPER_TABLES + RECONCILE_TABLES + RETENTION_TABLES
    return [f"{schema}.{table}" for table in tables]
