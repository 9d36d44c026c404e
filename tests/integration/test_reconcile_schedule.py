"""Scheduled reconciliation jobs record their runs in `recon_jobs`, one instance at a time."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdc_recon.config import load_settings
from cdc_recon.control_schema import init_control_schema
from cdc_recon.reconcile.scheduler import ReconcileScheduler
from tests.conftest import Database, wait_for

pytestmark = pytest.mark.integration


def test_due_jobs_run_and_are_recorded(source_db: Database, target_db: Database) -> None:
    for db in (source_db, target_db):
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {db.table('items')} (id int PRIMARY KEY, v text)"))
            conn.execute(
                sa.text(
                    f"INSERT INTO {db.table('items')} SELECT g, 'v' FROM generate_series(1, 50) g"
                )
            )
    with target_db.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {target_db.table('items')} SET v = 'drift' WHERE id = 7"))
    init_control_schema(target_db.engine, target_db.schema)
    table = {"source": f"{source_db.schema}.items", "target": f"{target_db.schema}.items"}
    schedule = {"enabled": True, "counts": 3600, "checksums": 3600, "deep": None, "rules": None}
    settings = load_settings(
        source_url=source_db.url,
        target_url=target_db.url,
        control_schema=target_db.schema,
        reconcile={"tables": [table], "schedule": schedule},
    )
    first, second = ReconcileScheduler(settings), ReconcileScheduler(settings)
    first.start()
    second.start()
    try:
        wait_for(lambda: len(first.completed) + len(second.completed) >= 2, "two jobs", 60)
    finally:
        first.stop()
        second.stop()
    with target_db.engine.connect() as conn:
        jobs = conn.execute(
            sa.text(f"SELECT job_type, status FROM {target_db.table('recon_jobs')} ORDER BY 1")
        ).all()
    # Each job ran once across both instances: counts agree, the checksum finds the drift.
    assert [tuple(j) for j in jobs] == [("checksums", "FAIL"), ("counts", "PASS")]
