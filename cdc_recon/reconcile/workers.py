"""The run's bounded pool of worker threads, shared by every table and every segment.

A reconcile run submits one job per table (its checks in order) and one per business
rule to `Workers(reconcile.workers)`; a checksum check fans its segments out to the same
pool. No more than `workers` threads ever run a job, so no more than `workers` queries
run against each database at once, however many tables are open (the engines are
pooled for that many connections, plus one for the run's own bookkeeping).

A job that waits for the tasks it fanned out never just blocks a thread: it runs a task
nobody has started yet itself (`wait_any`), and waits only while all of its tasks run on
other threads. So a table job on the last free thread still gets its segments done, and
a big table's segments are picked up by the threads that the small tables free.

    >>> with Workers(2) as workers:                         # doctest: +SKIP
    ...     tables = [workers.submit(partial(check_table, t)) for t in specs]
    ...     results = [task.outcome() for task in tables]   # in submission order
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """The task was cancelled before any thread started it."""


class Task(Generic[T]):
    """A unit of work that whichever thread claims it first runs, exactly once."""

    def __init__(self, fn: Callable[[], T], workers: Workers) -> None:
        self._fn = fn
        self._claim = threading.Lock()
        self._workers = workers
        self._done = False
        self._result: T | None = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._done

    def try_run(self) -> bool:
        """Runs the task on this thread unless another thread claimed it first."""
        if not self._claim.acquire(blocking=False):
            return False
        try:
            self._result = self._fn()
        except BaseException as exc:  # handed to whoever asks for the outcome
            self._error = exc
        self._finish()
        return True

    def cancel(self) -> bool:
        """Marks a task nobody started as cancelled; False when it already started."""
        if not self._claim.acquire(blocking=False):
            return False
        self._error = Cancelled()
        self._finish()
        return True

    def _finish(self) -> None:
        with self._workers.finished:
            self._done = True
            self._workers.open.discard(self)
            self._workers.finished.notify_all()

    def outcome(self) -> T:
        """Waits (without helping) until the task ran; its result, or raises its error."""
        with self._workers.finished:
            self._workers.finished.wait_for(lambda: self._done)
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


class Workers:
    """`count` threads; tasks are claimed by a pool thread or by a job waiting for them."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("workers must be at least 1")
        self.count = count
        self._pool = ThreadPoolExecutor(count, thread_name_prefix="cdcr-recon")
        self.finished = threading.Condition()
        self.open: set[Task[Any]] = set()
        self._closing = False

    def submit(self, fn: Callable[[], T]) -> Task[T]:
        """A task for `fn`, queued for the pool; cancelled at once when closing."""
        task = Task(fn, self)
        with self.finished:
            closing = self._closing
            if not closing:
                self.open.add(task)
        if closing:
            task.cancel()
        else:
            self._pool.submit(task.try_run)
        return task

    def wait_any(self, tasks: Collection[Task[T]]) -> list[Task[T]]:
        """The tasks of `tasks` that are done, at least one: runs one nobody started on
        this thread if there is one, else waits until one of them finishes."""
        for task in tasks:
            if not task.done and task.try_run():
                break
        else:
            with self.finished:
                self.finished.wait_for(lambda: any(t.done for t in tasks))
        return [t for t in tasks if t.done]

    def gather(self, tasks: list[Task[T]]) -> list[T]:
        """Every task's result, in order, helping to run them (see `wait_any`)."""
        pending = set(tasks)
        while pending:
            pending.difference_update(self.wait_any(pending))
        return [t.outcome() for t in tasks]

    def close(self, *, cancel: bool = False) -> None:
        """Waits for the tasks; with `cancel`, first cancels every task nobody started
        (a job waiting for one gets `Cancelled`), so that only running tasks finish."""
        if cancel:
            with self.finished:
                self._closing = True
                unstarted = list(self.open)
            for task in unstarted:
                task.cancel()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(cancel=exc is not None)
