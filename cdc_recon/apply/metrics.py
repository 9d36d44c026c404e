"""The service's Prometheus metrics, and what one instance knows about itself right now.

Metrics live on prometheus-client's default registry and follow Prometheus' naming:
`cdc_recon_` prefix, `_total` counters, `_seconds` durations. Each capability defines its
metrics beside the code that sets them (`sweep.metrics`, `monitor.metrics`,
`reconcile.metrics`); `/metrics` serves all that the running process imported, which
for `cdc-recon run` is everything (`cdc_recon.run` imports each capability it starts).

The service loop feeds a `ServiceMonitor` from three places of `cdc_recon.apply.service`:
`apply_timer()` around the target write, `batch_applied()` after each applied batch, and
`refresh(consumer)` once per loop turn (rate-limited here) for lag and assignment. The
HTTP thread only reads `snapshot()` and `history()`, which are copies taken under a lock,
so the consumer is never touched off the service's thread.

    >>> monitor = ServiceMonitor()
    >>> with monitor.apply_timer():
    ...     result = applier.write(batch, offsets, group)    # doctest: +SKIP
    >>> monitor.batch_applied(result, len(batch))            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from cdc_recon.apply.progress import ServiceStats, partition_lag
from cdc_recon.batch import ApplyResult
from cdc_recon.batch import TopicPartitionKey as TPKey
from cdc_recon.kafka.consumer import Watermarks

HISTORY_POINTS = 720  # one hour at the default 5 s spacing
HISTORY_EVERY = 5.0  # seconds between history points
REFRESH_EVERY = 1.0  # seconds between lag refreshes from the service loop

CONSUMER_LAG = Gauge(
    "cdc_recon_consumer_lag",
    "Messages of a partition this instance owns that are not applied yet.",
    ["topic", "partition"],
)
PARTITIONS_ASSIGNED = Gauge(
    "cdc_recon_partitions_assigned", "Partitions this instance owns in the consumer group."
)
EVENTS_APPLIED = Counter(
    "cdc_recon_events_applied", "Changes that moved a target row, by table and op.", ["table", "op"]
)
MESSAGES = Counter(
    "cdc_recon_messages",
    "Messages processed, by outcome: applied, superseded, duplicate, skipped, quarantined.",
    ["outcome"],
)
IGNORED_COLUMNS = Counter(
    "cdc_recon_ignored_columns_total",
    "Changes whose new source column was left out of the write (on_new_column: ignore).",
    ["table", "column"],
)
QUARANTINED = Counter(
    "cdc_recon_quarantined", "Messages sent to the dead-letter topic, by reason.", ["reason"]
)
BATCH_APPLY_SECONDS = Histogram(
    "cdc_recon_batch_apply_seconds",
    "Seconds of one batch's target transaction, retries included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BATCH_SIZE = Histogram(
    "cdc_recon_batch_size",
    "Messages per applied batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
)
LAST_BATCH = Gauge("cdc_recon_last_batch_timestamp_seconds", "Unix time of the last applied batch.")


class ConsumerView(Protocol):
    """What `ServiceMonitor.refresh` reads of `GroupConsumer` (on the service's thread)."""

    joined: bool

    def positions(self) -> dict[TPKey, int | None]: ...

    def watermarks(
        self, partitions: Iterable[TPKey], *, cached: bool = False, timeout: float = 10.0
    ) -> dict[TPKey, Watermarks]: ...


@dataclass(frozen=True)
class PartitionState:
    topic: str
    partition: int
    position: int | None
    end_offset: int | None
    lag: int | None


@dataclass(frozen=True)
class Snapshot:
    """This instance at one moment: the partitions it owns and what it did so far."""

    joined: bool = False
    partitions: tuple[PartitionState, ...] = ()
    stats: ServiceStats = field(default_factory=ServiceStats)
    last_batch_at: float | None = None  # unix time
    taken_at: float = 0.0  # unix time

    @property
    def total_lag(self) -> int:
        return sum(p.lag or 0 for p in self.partitions)


def lag_states(
    positions: Mapping[TPKey, int | None], marks: Mapping[TPKey, Watermarks]
) -> tuple[PartitionState, ...]:
    """Per owned partition, its position, end offset and lag (None where not known yet)."""
    found = []
    for (topic, part), position in sorted(positions.items()):
        mark = marks.get((topic, part))
        lag = partition_lag(position, mark) if mark is not None else None
        end = mark.high if mark is not None else None
        found.append(PartitionState(topic, part, position, end, lag))
    return tuple(found)


class ServiceMonitor:
    """Metrics and a snapshot of one running service; see the module docstring."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._stats = ServiceStats()
        self._snapshot = Snapshot(taken_at=clock())
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)
        self._refreshed = float("-inf")
        self._labelled: set[TPKey] = set()

    @contextlib.contextmanager
    def apply_timer(self) -> Iterator[None]:
        """Times the target write of one batch (the pipeline's worker thread)."""
        with BATCH_APPLY_SECONDS.time():
            yield

    def batch_applied(self, result: ApplyResult, count: int) -> None:
        """Counts one applied batch (the service's thread, after its database commit)."""
        for (table, op), applied in result.applied_by_table.items():
            EVENTS_APPLIED.labels(table=table, op=op).inc(applied)
        outcomes = {
            "applied": result.applied,
            "superseded": result.superseded,
            "duplicate": result.duplicates,
            "skipped": result.skipped,
            "quarantined": len(result.failures),
        }
        for outcome, number in outcomes.items():
            if number:
                MESSAGES.labels(outcome=outcome).inc(number)
        for failure in result.failures:
            QUARANTINED.labels(reason=failure.reason).inc()
        BATCH_SIZE.observe(count)
        now = self._clock()
        LAST_BATCH.set(now)
        with self._lock:
            self._stats.add(result, count)
            stats = dataclasses.replace(
                self._stats, failures_by_reason=dict(self._stats.failures_by_reason)
            )
            self._snapshot = dataclasses.replace(self._snapshot, stats=stats, last_batch_at=now)

    def refresh(self, consumer: ConsumerView, *, force: bool = False) -> None:
        """Lag and assignment from the consumer, at most every `REFRESH_EVERY` seconds."""
        now = self._clock()
        if not force and now - self._refreshed < REFRESH_EVERY:
            return
        self._refreshed = now
        positions = consumer.positions()
        marks = consumer.watermarks(positions, cached=True) if positions else {}
        states = lag_states(positions, marks)
        self._export_lag(states)
        with self._lock:
            self._snapshot = dataclasses.replace(
                self._snapshot, joined=consumer.joined, partitions=states, taken_at=now
            )
            if not self._history or now - self._history[-1]["t"] >= HISTORY_EVERY:
                self._history.append(_history_point(self._snapshot, now))

    def _export_lag(self, states: tuple[PartitionState, ...]) -> None:
        owned = {(s.topic, s.partition) for s in states}
        for topic, part in self._labelled - owned:  # revoked: another member reports it
            CONSUMER_LAG.remove(topic, str(part))
        self._labelled = owned
        for state in states:
            if state.lag is not None:
                CONSUMER_LAG.labels(topic=state.topic, partition=str(state.partition)).set(
                    state.lag
                )
        PARTITIONS_ASSIGNED.set(len(states))

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def history(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._history)


def _history_point(snapshot: Snapshot, now: float) -> dict[str, Any]:
    return {
        "t": round(now, 3),
        "messages": snapshot.stats.messages,
        "applied": snapshot.stats.applied,
        "lag": {f"{p.topic}[{p.partition}]": p.lag for p in snapshot.partitions},
        "total_lag": snapshot.total_lag,
    }
