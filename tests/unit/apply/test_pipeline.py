"""The apply pipeline: order, bounded depth, and nothing applied after a failed batch."""

from __future__ import annotations

import threading
import weakref
from typing import Any

import pytest

from cdc_recon.apply.pipeline import ApplyPipeline
from cdc_recon.batch import ApplyResult
from cdc_recon.batch import TopicPartitionKey as TPKey
from cdc_recon.exceptions import ApplyError

WAIT = 10.0  # seconds: a deadline, never a pause


class Worker:
    """An `apply` that blocks each batch until the test releases it."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.started: list[int] = []
        self.release: dict[int, threading.Event] = {}
        self.entered: dict[int, threading.Event] = {}

    def gate(self, batch: int) -> None:
        self.release.setdefault(batch, threading.Event())
        self.entered.setdefault(batch, threading.Event())

    def apply(self, batch: Any, offsets: dict[TPKey, int]) -> ApplyResult:
        self.gate(batch)
        self.started.append(batch)
        self.entered[batch].set()
        assert self.release[batch].wait(WAIT)
        if batch == self.fail_on:
            raise ApplyError(f"batch {batch} rejected")
        return ApplyResult(applied=batch, next_offsets=offsets)


def test_results_are_handed_on_in_order_with_at_most_depth_in_flight() -> None:
    worker = Worker()
    handed: list[int] = []
    pipeline = ApplyPipeline(worker.apply, lambda r, n, o: handed.append(r.applied), depth=2)
    for batch in (1, 2, 3):
        worker.gate(batch)
    pipeline.submit(1, {("t", 0): 1}, 1)
    pipeline.submit(2, {("t", 0): 2}, 1)
    assert worker.entered[1].wait(WAIT)
    assert handed == [] and pipeline.busy

    done = threading.Event()

    def third() -> None:
        pipeline.submit(3, {("t", 0): 3}, 1)  # waits for batch 1: two are in flight
        done.set()

    thread = threading.Thread(target=third)
    thread.start()
    worker.release[1].set()
    assert done.wait(WAIT)
    assert handed == [1]  # submit handed batch 1 on before it returned
    worker.release[2].set()
    worker.release[3].set()
    pipeline.drain()
    thread.join(WAIT)
    pipeline.close()
    assert handed == [1, 2, 3]
    assert worker.started == [1, 2, 3]


def test_no_batch_is_applied_after_a_failed_one() -> None:
    worker = Worker(fail_on=1)
    handed: list[int] = []
    pipeline = ApplyPipeline(worker.apply, lambda r, n, o: handed.append(r.applied), depth=2)
    for batch in (1, 2):
        worker.gate(batch)
    pipeline.submit(1, {("t", 0): 1}, 1)
    pipeline.submit(2, {("t", 0): 2}, 1)
    worker.release[1].set()
    worker.release[2].set()
    with pytest.raises(ApplyError, match="batch 1 rejected"):
        pipeline.drain()
    pipeline.close()
    assert worker.started == [1]  # batch 2 never reached the database
    assert handed == []


def test_a_batch_is_freed_by_the_caller_not_by_the_worker() -> None:
    """Freeing a batch's objects is the caller's work: the worker goes straight on to
    the next batch's statements."""

    class Batch:
        pass

    freed_on: list[str] = []
    dropped = threading.Event()

    def apply(batch: Any, offsets: dict[TPKey, int]) -> ApplyResult:
        assert dropped.wait(WAIT)  # the test holds no reference to the batch any more
        return ApplyResult(next_offsets=offsets)

    pipeline = ApplyPipeline(apply, lambda r, n, o: None, depth=2)
    batch = Batch()
    weakref.finalize(batch, lambda: freed_on.append(threading.current_thread().name))
    pipeline.submit(batch, {("t", 0): 1}, 1)
    del batch
    dropped.set()
    pipeline.drain()
    pipeline.close()
    assert freed_on == [threading.current_thread().name]
