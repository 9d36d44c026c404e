"""Tables checked in parallel on real PostgreSQL: every table's differences, in order,
and never more connections than the run's workers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from cdc_recon.config import load_settings
from cdc_recon.reconcile import runner
from tests.conftest import Database

pytestmark = pytest.mark.integration

ROWS = 6000
TABLES = ("alpha", "beta", "gamma", "delta")
DDL = "CREATE TABLE {t} (id bigint PRIMARY KEY, name text, amount numeric(12,2))"
FILL = "INSERT INTO {t} SELECT g, 'name ' || g, g / 10.0 FROM generate_series(1, %(n)s) g"
PLANTED = {  # per table: its own differences, so that a mix-up between tables shows
    "alpha": ("UPDATE {t} SET amount = 0 WHERE id IN (10, 5000)", "DELETE FROM {t} WHERE id = 77"),
    "beta": ("UPDATE {t} SET name = NULL WHERE id = 2", "INSERT INTO {t} VALUES (9999, 'x', 1)"),
    "gamma": (),
    "delta": ("DELETE FROM {t} WHERE id IN (1, 6000)", "UPDATE {t} SET name = 'y' WHERE id = 3000"),
}
EXPECTED = {
    "alpha": {"mismatch [10]", "mismatch [5000]", "missing [77]"},
    "beta": {"mismatch [2]", "extra [9999]"},
    "gamma": set(),
    "delta": {"missing [1]", "missing [6000]", "mismatch [3000]"},
}


class PeakConnections:
    """The most connections an engine ever had checked out at once."""

    def __init__(self, engine: sa.Engine) -> None:
        self.now = self.peak = 0
        self._lock = threading.Lock()
        sa.event.listen(engine, "checkout", self._out)
        sa.event.listen(engine, "checkin", self._in)

    def _out(self, *_: Any) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def _in(self, *_: Any) -> None:
        with self._lock:
            self.now -= 1


def test_tables_in_parallel_report_each_tables_differences_in_order(
    source_db: Database, target_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    for db in (source_db, target_db):
        with db.engine.begin() as conn:
            for name in TABLES:
                conn.exec_driver_sql(DDL.format(t=db.table(name)))
                conn.exec_driver_sql(FILL.format(t=db.table(name)), {"n": ROWS})
    with target_db.engine.begin() as conn:
        for name, statements in PLANTED.items():
            for statement in statements:
                conn.exec_driver_sql(statement.format(t=target_db.table(name)))
    peaks: dict[str, PeakConnections] = {}
    make_engine = runner.reconcile_engine

    def watched(url: Any, *, name: str, workers: int) -> sa.Engine:
        engine = make_engine(url, name=name, workers=workers)
        peaks[name] = PeakConnections(engine)
        return engine

    monkeypatch.setattr(runner, "reconcile_engine", watched)
    workers = 3
    settings = load_settings(
        source_url=source_db.url,
        target_url=target_db.url,
        control_schema=target_db.schema,
        reconcile={
            "workers": workers,
            "segment_rows": 500,
            "bisection_factor": 4,
            "bisection_threshold": 16,
            "tables": [
                {"source": f"{source_db.schema}.{n}", "target": f"{target_db.schema}.{n}"}
                for n in TABLES
            ],
        },
    )
    report = runner.run_reconcile(settings, checks=["counts", "checksums"])

    tables = [f"{source_db.schema}.{n}" for n in TABLES]
    order = [(table, check) for table in tables for check in ("counts", "checksums")]
    assert [(r.table, r.check) for r in report.results] == order
    found = {
        name: {f"{f.type} {f.key}" for f in r.findings}
        for name, r in zip(TABLES, report.results[1::2], strict=True)
    }
    assert found == EXPECTED
    counted = [r.status for r in report.results[0::2]]
    assert counted == ["FAIL", "FAIL", "PASS", "FAIL"]
    with target_db.engine.connect() as conn:
        stored = conn.exec_driver_sql(
            f'SELECT table_name, check_name FROM "{target_db.schema}".recon_results '
            "WHERE run_id = %(run)s ORDER BY id",
            {"run": report.run_id},
        ).all()
    assert [tuple(row) for row in stored] == order
    # the run's own bookkeeping takes one more target connection on this thread
    assert peaks["source"].peak <= workers and peaks["target"].peak <= workers + 1
