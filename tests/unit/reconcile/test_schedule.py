from __future__ import annotations

import datetime as dt

from cdc_recon.config.reconcile_settings import ScheduleSettings
from cdc_recon.reconcile.scheduler import due_jobs

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def ago(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


def test_every_job_is_due_when_none_ever_ran() -> None:
    assert due_jobs(ScheduleSettings(enabled=True), {}, NOW) == [
        "counts",
        "checksums",
        "deep",
        "rules",
    ]


def test_a_job_is_due_once_its_interval_has_passed() -> None:
    last = {"counts": ago(minutes=14), "checksums": ago(hours=4), "deep": ago(hours=1)}
    last["rules"] = ago(days=6)
    assert due_jobs(ScheduleSettings(enabled=True), last, NOW) == ["checksums"]


def test_a_job_without_an_interval_never_runs() -> None:
    schedule = ScheduleSettings(enabled=True, deep=None, rules=None)
    assert due_jobs(schedule, {"counts": ago(hours=1)}, NOW) == ["counts", "checksums"]
