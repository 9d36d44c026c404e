"""The sweeper's Prometheus metrics: what the sweeps of this instance found and replayed.

`observed_sweeps(sweep_once)` counts each run (`cdc_recon.run` wraps the sweeper thread's
sweep with it); the deployment-wide gauges of missed changes and the watermark's age are
set by the status poller (`cdc_recon.monitor.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import Counter, Histogram

MISSED_FOUND = Counter(
    "cdc_recon_missed_changes_found", "Missed changes the sweeper of this instance found."
)
MISSED_REPLAYED = Counter(
    "cdc_recon_missed_changes_replayed", "Missed changes the sweeper of this instance replayed."
)
MISSED_REPLAY_FAILED = Counter(
    "cdc_recon_missed_changes_replay_failed",
    "Missed changes the sweeper of this instance could not replay.",
)
SWEEPS = Counter("cdc_recon_sweeps", "Sweeper runs of this instance, by status.", ["status"])
SWEEP_SECONDS = Histogram(
    "cdc_recon_sweep_duration_seconds",
    "Seconds of one sweeper run that checked a window.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)


class SweepResult(Protocol):
    @property
    def status(self) -> str: ...

    @property
    def missed(self) -> int: ...

    @property
    def replayed(self) -> int: ...

    @property
    def replay_failed(self) -> int: ...

    @property
    def seconds(self) -> float: ...

    @property
    def run_id(self) -> int | None: ...


def observe_sweep(run: SweepResult) -> None:
    """Count one sweeper run; only runs that checked a window have a duration."""
    status = run.status if run.status in ("ok", "idle", "failed") else "skipped"
    SWEEPS.labels(status=status).inc()
    if run.run_id is not None:
        SWEEP_SECONDS.observe(run.seconds)
    MISSED_FOUND.inc(run.missed)
    MISSED_REPLAYED.inc(run.replayed)
    MISSED_REPLAY_FAILED.inc(run.replay_failed)


def observed_sweeps(sweep: Callable[..., Any]) -> Callable[..., Any]:
    """`sweep` (`sweeper.sweep_once`) whose runs are counted; a raised error counts as failed."""

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            result = sweep(*args, **kwargs)
        except Exception:
            SWEEPS.labels(status="failed").inc()
            raise
        observe_sweep(result)
        return result

    return run
