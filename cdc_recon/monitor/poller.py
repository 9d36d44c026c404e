"""The status thread: every `monitoring.refresh` seconds, ask the target and Kafka.

It reads the control tables' figures (`cdc_recon.monitor.figures.control_figures`), checks
that the Kafka cluster answers, exports what it read as gauges (ledger rows, open
failures, missed changes, the sweeper's watermark age) and keeps the result for the API,
so that HTTP requests and scrapes never wait for the database.

    >>> poller = StatusPoller(settings, engine, probe)   # doctest: +SKIP
    >>> poller.start()                                   # doctest: +SKIP
    >>> poller.latest().database_error                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa

from cdc_recon.apply import metrics
from cdc_recon.config import Settings
from cdc_recon.exceptions import CdcReconError
from cdc_recon.monitor.figures import ControlFigures, control_figures
from cdc_recon.monitor.metrics import (
    COMPLETENESS_RATIO,
    LEDGER_NEXT_DROP,
    LEDGER_OLDEST_KEPT,
    LEDGER_PARTITION_ROWS,
    LEDGER_PARTITIONS,
    LEDGER_ROWS,
    MISSED_CHANGES,
    OLDEST_UNVERIFIED,
    OPEN_FAILURES,
    WATERMARK_AGE,
)

LOG = logging.getLogger("cdc_recon.http.status")
MISSED_STATUSES = ("pending", "replayed", "failed")


class Probe(Protocol):
    def check(self, timeout: float = 2.0) -> int: ...


@dataclass(frozen=True)
class PollResult:
    """What the last poll found; an error string where a service did not answer."""

    figures: ControlFigures | None = None
    database_error: str | None = "not checked yet"
    kafka_error: str | None = "not checked yet"
    at: float = 0.0  # unix time; 0 before the first poll


class StatusPoller(threading.Thread):
    """See the module docstring; `stop()` ends it within a refresh interval."""

    def __init__(
        self,
        settings: Settings,
        engine: sa.Engine,
        probe: Probe,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="cdcr-status", daemon=True)
        self._settings = settings
        self._engine = engine
        self._probe = probe
        self._clock = clock
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._latest = PollResult()
        self._seen_reasons: set[str] = set()
        self._seen_partitions: set[str] = set()

    def run(self) -> None:
        while not self._stopping.is_set():
            self.poll_once()
            self._stopping.wait(self._settings.monitoring.refresh)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def latest(self) -> PollResult:
        with self._lock:
            return self._latest

    def poll_once(self) -> PollResult:
        figures, database_error = None, None
        try:
            figures = control_figures(
                self._engine,
                self._settings.control_schema,
                self._settings.group_id,
                self._settings,
            )
        except (CdcReconError, sa.exc.SQLAlchemyError) as exc:
            database_error = str(exc).splitlines()[0]
        kafka_error = None
        try:
            self._probe.check()
        except CdcReconError as exc:
            kafka_error = str(exc)
        result = PollResult(figures, database_error, kafka_error, self._clock())
        if figures is not None:
            self._export(figures, result.at)
        if database_error or kafka_error:
            LOG.warning(
                "status: database %s, kafka %s", database_error or "ok", kafka_error or "ok"
            )
        with self._lock:
            self._latest = result
        return result

    def _export(self, figures: ControlFigures, now: float) -> None:
        LEDGER_ROWS.set(figures.ledger_rows)
        ledger = figures.ledger
        LEDGER_PARTITIONS.set(len(ledger.partitions))
        names = {p.name for p in ledger.partitions}
        for gone in self._seen_partitions - names:  # dropped: no stale series
            with contextlib.suppress(KeyError):
                LEDGER_PARTITION_ROWS.remove(gone)
        for p in ledger.partitions:
            LEDGER_PARTITION_ROWS.labels(partition=p.name).set(p.rows)
        self._seen_partitions = names
        oldest, due = ledger.oldest_kept, ledger.next_drop_at
        LEDGER_OLDEST_KEPT.set(oldest.timestamp() if oldest else 0)
        LEDGER_NEXT_DROP.set(due.timestamp() if due else 0)
        for reason in self._seen_reasons - set(figures.open_failures):
            OPEN_FAILURES.labels(reason=reason).set(0)
        for reason, count in figures.open_failures.items():
            OPEN_FAILURES.labels(reason=reason).set(count)
        self._seen_reasons |= set(figures.open_failures)
        for status in MISSED_STATUSES:
            MISSED_CHANGES.labels(status=status).set(figures.missed.get(status, 0))
        age = now - figures.watermark.timestamp() if figures.watermark else 0.0
        WATERMARK_AGE.set(max(age, 0.0))
        self._export_completeness(figures, now)

    def _export_completeness(self, figures: ControlFigures, now: float) -> None:
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        complete = figures.completeness
        for item in (*complete.tables, complete.overall):
            ratio, age = item.ratio, item.age_seconds(moment)
            if ratio is not None:
                COMPLETENESS_RATIO.labels(table=item.table).set(ratio)
            if age is not None:
                OLDEST_UNVERIFIED.labels(table=item.table).set(age)


def readiness(
    poll: PollResult, snapshot: metrics.Snapshot, now: float, refresh: float
) -> dict[str, Any]:
    """The checks of `/health/ready`: database and Kafka reachable, partitions assigned."""
    stale = poll.at == 0 or now - poll.at > max(3 * refresh, 15.0)
    checks = {
        "database": "stale" if stale else (poll.database_error or "ok"),
        "kafka": "stale" if stale else (poll.kafka_error or "ok"),
        "partitions": (
            f"{len(snapshot.partitions)} assigned"
            if snapshot.partitions
            else ("none assigned" if snapshot.joined else "not joined the group yet")
        ),
    }
    ready = checks["database"] == "ok" and checks["kafka"] == "ok" and bool(snapshot.partitions)
    return {"status": "ready" if ready else "not ready", "checks": checks}


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def status_document(
    settings: Settings, snapshot: metrics.Snapshot, poll: PollResult, started: float
) -> dict[str, Any]:
    """`/api/status`: this instance (partitions, lag, counts) and the control tables."""
    stats = snapshot.stats
    figures = poll.figures or ControlFigures()
    watermark = figures.watermark
    return {
        "group_id": settings.group_id,
        "instance": {"started_at": started, "uptime_seconds": round(time.time() - started, 1)},
        "partitions": [
            {
                "topic": p.topic,
                "partition": p.partition,
                "position": p.position,
                "end_offset": p.end_offset,
                "lag": p.lag,
            }
            for p in snapshot.partitions
        ],
        "total_lag": snapshot.total_lag,
        "processed": {
            "batches": stats.batches,
            "messages": stats.messages,
            "applied": stats.applied,
            "superseded": stats.superseded,
            "duplicates": stats.duplicates,
            "skipped": stats.skipped,
            "failed": stats.failed,
        },
        "last_batch_at": snapshot.last_batch_at,
        "ledger": {"rows": figures.ledger_rows, "exact": figures.ledger_exact},
        "ledger_partitions": figures.ledger.as_dict(),
        "failures": {
            "open": sum(figures.open_failures.values()),
            "by_reason": figures.open_failures,
        },
        "missed": {s: figures.missed.get(s, 0) for s in MISSED_STATUSES},
        "sweeper": {
            "enabled": settings.sweeper.enabled,
            "watermark": _iso(watermark),
            "watermark_age_seconds": (
                round(time.time() - watermark.timestamp(), 1) if watermark else None
            ),
            "last_run": figures.last_sweep,
        },
        "review": {"pending": figures.review_pending},
        "completeness": figures.completeness.as_dict(dt.datetime.now(dt.UTC)),
        "database_error": poll.database_error,
        "kafka_error": poll.kafka_error,
        "refreshed_at": poll.at,
    }
