"""Replay jobs started over HTTP: `POST /api/replay` → a job id, `GET /api/jobs/{id}`.

A job runs `replay_window` on a thread of its own (its own connections, like the CLI's
`replay`), reporting the messages or rows read so far. At most `max_running` jobs run
at once; the latest `keep` finished jobs stay queryable.

    >>> jobs = ReplayJobs(settings)                                      # doctest: +SKIP
    >>> job = jobs.submit(parse_request({"from": "-1h"}, now))          # doctest: +SKIP
    >>> jobs.get(job.id)["status"]                                       # doctest: +SKIP
    'running'
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdc_recon.config import Settings
from cdc_recon.exceptions import JobsBusy, UsageError
from cdc_recon.timeparse import parse_window

LOG = logging.getLogger("cdc_recon.http.jobs")
SOURCES = ("kafka", "source-db")
ReplayFn = Callable[..., Any]  # replay_window's signature


@dataclass(frozen=True)
class ReplayRequest:
    start: datetime
    end: datetime
    tables: tuple[str, ...] | None = None
    source: str = "kafka"
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "tables": list(self.tables) if self.tables else None,
            "source": self.source,
            "dry_run": self.dry_run,
        }


def parse_request(body: Mapping[str, Any], now: datetime) -> ReplayRequest:
    """`{"from", "to"?, "table"? (a name or a list), "source"?, "dry_run"?}` → a request.

    Raises `UsageError` naming what is wrong.
    """
    unknown = set(body) - {"from", "to", "table", "source", "dry_run"}
    if unknown:
        raise UsageError(f"unknown field(s): {', '.join(sorted(unknown))}")
    start, end = body.get("from"), body.get("to", "now")
    if not isinstance(start, str) or not isinstance(end, str):
        raise UsageError('"from" (and "to") must be times: ISO-8601, now, or relative (-2h)')
    first, last = parse_window(start, end, now)
    table = body.get("table")
    tables = (table,) if isinstance(table, str) else table
    if tables is not None and not (
        isinstance(tables, list | tuple) and all(isinstance(t, str) for t in tables)
    ):
        raise UsageError('"table" must be a table name or a list of them')
    source = body.get("source", "kafka")
    if source not in SOURCES:
        raise UsageError(f'"source" must be one of {", ".join(SOURCES)}')
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise UsageError('"dry_run" must be true or false')
    return ReplayRequest(first, last, tuple(tables) if tables else None, source, dry_run)


@dataclass
class Job:
    """One replay's progress; mutated only by its own thread (and read under the lock)."""

    id: str
    request: ReplayRequest
    status: str = "running"  # running | done | failed
    read: int = 0
    total: int | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": "replay",
            "status": self.status,
            "request": self.request.as_dict(),
            "progress": {"read": self.read, "total": self.total},
            "summary": self.summary,
            "error": self.error,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


class ReplayJobs:
    """Starts and remembers replay jobs; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        replay: ReplayFn | None = None,
        max_running: int = 1,
        keep: int = 100,
    ) -> None:
        self._settings = settings
        self._replay = replay
        self._max_running = max_running
        self._keep = keep
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def submit(self, request: ReplayRequest) -> Job:
        """Start a job; `JobsBusy` when `max_running` jobs are still running."""
        with self._lock:
            running = sum(1 for job in self._jobs.values() if job.status == "running")
            if running >= self._max_running:
                raise JobsBusy(f"{running} replay job(s) running; try again when one finished")
            job = Job(uuid.uuid4().hex, request)
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status == "running":
                    break
                del self._jobs[oldest]
        thread = threading.Thread(target=self._run, args=(job,), name=f"cdcr-job-{job.id[:8]}")
        thread.daemon = True
        thread.start()
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.as_dict() if job else None

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [job.as_dict() for job in reversed(self._jobs.values())]

    def _run(self, job: Job) -> None:
        request = job.request

        def progress(read: int, total: int | None) -> None:
            with self._lock:
                job.read, job.total = read, total

        LOG.info("replay job %s: %s", job.id, request.as_dict())
        try:
            summary = self._replay_fn()(
                self._settings,
                start=request.start,
                end=request.end,
                tables=list(request.tables) if request.tables else None,
                source=request.source,
                dry_run=request.dry_run,
                progress=progress,
            )
        except Exception as exc:  # a job's failure is its result, never the server's
            LOG.warning("replay job %s failed: %s", job.id, exc)
            with self._lock:
                job.status, job.error, job.finished_at = "failed", str(exc), time.time()
            return
        with self._lock:
            job.status, job.summary, job.finished_at = "done", summary.as_dict(), time.time()

    def _replay_fn(self) -> ReplayFn:
        if self._replay is None:
            from cdc_recon.replay import replay_window

            self._replay = replay_window
        return self._replay
