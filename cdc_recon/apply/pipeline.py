"""Batches in flight: decode the next batches while the target applies this one.

The service's thread polls and decodes; a single worker thread runs the target
transactions, one batch at a time and in order (psycopg2 releases the GIL while
PostgreSQL works). Up to `depth` prepared batches may wait for the worker, so that a
slower moment on either side (the two cores are shared with PostgreSQL and the broker)
does not leave the other idle. `submit` waits for the oldest batch once `depth` are in
flight and hands its result to `on_applied` on the caller's thread, so the dead-letter
topic and the Kafka commit stay in order after their database commit. Once a batch
fails, the worker applies none of the batches queued after it: their offsets must not
reach the target ahead of the failed one's messages.

    >>> pipeline = ApplyPipeline(apply, on_applied)   # doctest: +SKIP
    >>> pipeline.submit(prepared, offsets, count)     # doctest: +SKIP
    >>> pipeline.drain()                              # doctest: +SKIP
"""

from __future__ import annotations

import gc
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from cdc_recon.batch import ApplyResult
from cdc_recon.batch import TopicPartitionKey as TPKey
from cdc_recon.exceptions import ApplyError

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
    """Runs `apply` on a worker thread, in order, with at most `depth` batches in flight."""

    def __init__(self, apply: ApplyFn, on_applied: AppliedFn, depth: int = 2) -> None:
        tune_interpreter()
        self._apply = apply
        self._on_applied = on_applied
        self._depth = max(depth, 1)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdc-recon-apply")
        self._inflight: deque[tuple[Future[ApplyResult], int, dict[TPKey, int], Any]] = deque()
        self._error: BaseException | None = None  # the first failure; set by the worker

    @property
    def busy(self) -> bool:
        return bool(self._inflight)

    @property
    def failed(self) -> bool:
        """A batch failed: the ones after it were not applied, and will not be."""
        return self._error is not None

    def submit(self, batch: Any, offsets: dict[TPKey, int], count: int) -> None:
        """Queue this batch; first wait for the oldest while `depth` are in flight."""
        while len(self._inflight) >= self._depth:
            self._finish_oldest()
        future = self._executor.submit(self._run, batch, offsets)
        # The batch is freed here, on this thread, when its result is taken (the last
        # reference): freeing its ~200,000 objects takes the worker ~10 ms, during which
        # the next batch's statements would wait for it.
        self._inflight.append((future, count, offsets, batch))

    def drain(self) -> None:
        """Wait for every batch in flight and pass the results on, oldest first;
        re-raises the first error."""
        while self._inflight:
            self._finish_oldest()

    def close(self) -> None:
        """Stop the worker, waiting for the batches still in flight (their results are
        dropped: the offsets they stored in the target are where a new owner resumes)."""
        self._executor.shutdown(wait=True)

    def _finish_oldest(self) -> None:
        future, count, offsets, _batch = self._inflight.popleft()
        self._on_applied(future.result(), count, offsets)

    def _run(self, batch: Any, offsets: dict[TPKey, int]) -> ApplyResult:
        if self._error is not None:
            # Named after its cause: this error may be the one a caller reports.
            raise ApplyError(f"not applied after an earlier batch failed: {self._error}")
        try:
            return self._apply(batch, offsets)
        except BaseException as exc:
            self._error = exc
            raise
