"""One batch in flight: decode the next batch while the target applies this one.

The service's thread polls and decodes; a single worker thread runs the target
transaction (psycopg2 releases the GIL while PostgreSQL works). `submit` first waits for
the batch already in flight and hands its result to `on_applied` on the caller's thread,
so the dead-letter topic and the Kafka commit stay in order after their database commit.

    >>> pipeline = ApplyPipeline(apply, on_applied)   # doctest: +SKIP
    >>> pipeline.submit(prepared, offsets, count)     # doctest: +SKIP
    >>> pipeline.drain()                              # doctest: +SKIP
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from cdc_recon.batch import ApplyResult
from cdc_recon.batch import TopicPartitionKey as TPKey

ApplyFn = Callable[[Any, dict[TPKey, int]], ApplyResult]
AppliedFn = Callable[[ApplyResult, int, dict[TPKey, int]], None]


# The worker needs the GIL back after each statement; with Python's default 5 ms switch
# interval it waits that long behind the decoding thread every time.
SWITCH_INTERVAL = 0.0005
# Every event allocates a few dicts the cyclic collector tracks; at the default threshold
# (700) it ran every 150 events and cost ~12 % of decoding. The objects of a batch die by
# reference counting, so collecting rarely loses nothing.
GC_THRESHOLD = 20_000


def tune_interpreter() -> None:
    """Thread switches and garbage collection set for a long-running batch loop."""
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)
    if gc.get_threshold()[0] < GC_THRESHOLD:
        gc.freeze()  # what startup allocated (modules, config) is never scanned again
        gc.set_threshold(GC_THRESHOLD, 20, 100)


class ApplyPipeline:
    """Runs `apply` on a worker thread, at most one batch at a time."""

    def __init__(self, apply: ApplyFn, on_applied: AppliedFn) -> None:
        tune_interpreter()
        self._apply = apply
        self._on_applied = on_applied
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdc-recon-apply")
        self._inflight: tuple[Future[ApplyResult], int, dict[TPKey, int]] | None = None

    @property
    def busy(self) -> bool:
        return self._inflight is not None

    def submit(self, batch: Any, offsets: dict[TPKey, int], count: int) -> None:
        """Wait for the batch in flight (see `drain`), then start applying this one."""
        self.drain()
        future = self._executor.submit(self._apply, batch, offsets)
        self._inflight = (future, count, offsets)

    def drain(self) -> None:
        """Wait for the batch in flight and pass its result on; re-raises its error."""
        if self._inflight is None:
            return
        future, count, offsets = self._inflight
        self._inflight = None
        self._on_applied(future.result(), count, offsets)

    def close(self) -> None:
        """Stop the worker, waiting for a batch still in flight (its result is dropped:
        the offsets it stored in the target are where a new owner resumes)."""
        self._executor.shutdown(wait=True)
