"""Reconciliation jobs inside `cdc-recon run`, on a schedule like a migration runbook.

`reconcile.schedule` gives each job type its interval (counts every 15 min, checksums
every 4 h, a deep check of everything daily, business rules weekly); a job is due when
its last start in `recon_jobs` is older than that. One instance runs a job at a time
(a PostgreSQL session lock per job type); every run is recorded in `recon_jobs` with its
status (PASS, FAIL, ERROR) and the reconcile run it produced.

    >>> due_jobs(ScheduleSettings(enabled=True), {}, now)   # doctest: +SKIP
    ['counts', 'checksums', 'deep', 'rules']
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping

import sqlalchemy as sa

from cdc_recon.config import Settings
from cdc_recon.config.reconcile_settings import ScheduleSettings
from cdc_recon.pg.engine import create_engine
from cdc_recon.reconcile import store
from cdc_recon.reconcile.runner import ReconcileReport, run_reconcile

LOG = logging.getLogger("cdc_recon.reconcile.scheduler")

JOB_CHECKS: dict[str, tuple[str, ...]] = {
    "counts": ("counts",),
    "checksums": ("checksums",),
    "deep": ("all",),
    "rules": ("rules",),
}
MAX_TICK = 30.0  # seconds between looks at the schedule


def due_jobs(
    schedule: ScheduleSettings, last: Mapping[str, dt.datetime], now: dt.datetime
) -> list[str]:
    """The job types whose interval has passed since they last started, in runbook order."""
    due = []
    for job in JOB_CHECKS:
        interval: float | None = getattr(schedule, job)
        if interval is None:
            continue
        started = last.get(job)
        if started is None or (now - started).total_seconds() >= interval:
            due.append(job)
    return due


Runner = Callable[..., ReconcileReport]


class ReconcileScheduler(threading.Thread):
    """Runs due reconciliation jobs beside the apply loop; errors are logged, never raised."""

    def __init__(self, settings: Settings, *, runner: Runner = run_reconcile) -> None:
        super().__init__(name="cdcr-reconcile", daemon=True)
        self.settings = settings
        self._runner = runner
        self._stopping = threading.Event()
        self.completed: list[tuple[str, str]] = []  # (job, status), for tests and logs

    def run(self) -> None:
        schedule = self.settings.reconcile.schedule
        intervals = [getattr(schedule, job) for job in JOB_CHECKS]
        tick = min([MAX_TICK, *(i for i in intervals if i is not None)])
        engine = create_engine(self.settings.target_url, name="target")
        try:
            while not self._stopping.is_set():
                try:
                    self._run_due(engine)
                except Exception as exc:  # a job must never take the service down
                    LOG.warning("scheduled reconciliation failed: %s", exc, exc_info=True)
                if self._stopping.wait(tick):
                    break
        finally:
            engine.dispose()

    def _run_due(self, engine: sa.Engine) -> None:
        schema = self.settings.control_schema
        now = dt.datetime.now(dt.UTC)
        last = store.last_jobs(engine, schema)
        for job in due_jobs(self.settings.reconcile.schedule, last, now):
            if self._stopping.is_set():
                return
            self._run_locked(engine, job)

    def _run_locked(self, engine: sa.Engine, job: str) -> None:
        schema = self.settings.control_schema
        with engine.connect() as conn:
            if not store.try_job_lock(conn, job):
                return  # another instance runs it
            try:
                started = dt.datetime.now(dt.UTC)
                again = store.last_jobs(engine, schema)
                if job not in due_jobs(self.settings.reconcile.schedule, again, started):
                    return
                status, run_id, detail = self._run_job(job)
                store.record_job(engine, schema, job, started, status, run_id, detail)
                self.completed.append((job, status))
                LOG.info("reconciliation job %s: %s %s", job, status, detail)
            finally:
                store.release_job_lock(conn, job)

    def _run_job(self, job: str) -> tuple[str, int | None, str]:
        try:
            report = self._runner(self.settings, checks=JOB_CHECKS[job])
        except Exception as exc:
            return "ERROR", None, f"{type(exc).__name__}: {exc}"[:2000]
        findings = report.as_dict()["findings"]
        return report.status, report.run_id, f"{findings} findings"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current job and wait up to `timeout`."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
