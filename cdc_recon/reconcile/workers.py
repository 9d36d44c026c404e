"""The run's bounded pool of worker threads, shared by every table and every segment.

A reconcile run submits one job per table (its checks in order) and one per business
rule to `Workers(reconcile.workers)`; a checksum check fans its segments (and each
segment its two sides) out to the same pool. Only the pool's `workers` threads run
tasks, so no more than `workers` queries run against each database at once, however
many tables are open (the engines are pooled for that many connections, plus one for
the run's own bookkeeping).

A task waiting for the tasks it fanned out never just blocks its pool thread
(`wait_any`): it runs one of its own that nobody has started; failing that, unless it
is itself running inside another task's wait, the newest task anybody submitted; it
sleeps only when there is nothing to start. So a table job on the last free thread gets
its segments done, the other side of a segment is read while this side is, and a big
table's segments are picked up by the threads that the small tables free. A wait
always ends: what it waits for runs on another thread, or it can run it itself. A
thread outside the pool (the run's own) only waits.

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
MAX_NESTING = 2  # tasks on a thread's stack from which a wait helps only with its own


class Cancelled(Exception):
    """The task was cancelled before any thread started it."""


class Task(Generic[T]):
    """A unit of work that whichever thread claims it first runs, exactly once."""

    def __init__(self, fn: Callable[[], T], workers: Workers) -> None:
        self._fn = fn
        self._claim = threading.Lock()
        self._workers = workers
        self.started = False
        self.done = False
        self._result: T | None = None
        self._error: BaseException | None = None

    def try_run(self) -> bool:
        """Runs the task on this thread unless another thread claimed it first."""
        if not self._claim.acquire(blocking=False):
            return False
        self.started = True
        nesting = self._workers.nesting
        nesting.depth = getattr(nesting, "depth", 0) + 1
        try:
            self._result = self._fn()
        except BaseException as exc:  # handed to whoever asks for the outcome
            self._error = exc
        finally:
            nesting.depth -= 1
        self._finish()
        return True

    def cancel(self) -> bool:
        """Marks a task nobody started as cancelled; False when it already started."""
        if not self._claim.acquire(blocking=False):
            return False
        self.started = True
        self._error = Cancelled()
        self._finish()
        return True

    def _finish(self) -> None:
        with self._workers.changed:
            self.done = True
            self._workers.open.pop(self, None)
            self._workers.changed.notify_all()

    def outcome(self) -> T:
        """Waits (without helping) until the task ran; its result, or raises its error."""
        with self._workers.changed:
            self._workers.changed.wait_for(lambda: self.done)
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


class Workers:
    """`count` pool threads; a task runs on one of them, claimed from the queue or by a
    task of the pool that waits (see the module docstring)."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("workers must be at least 1")
        self.count = count
        self._pool = ThreadPoolExecutor(count, thread_name_prefix="cdcr-recon")
        self.changed = threading.Condition()  # a task was submitted or finished
        self.open: dict[Task[Any], None] = {}  # submitted, not finished; oldest first
        self.nesting = threading.local()
        self._closing = False

    def submit(self, fn: Callable[[], T]) -> Task[T]:
        """A task for `fn`, queued for the pool; cancelled at once when closing."""
        task = Task(fn, self)
        with self.changed:
            closing = self._closing
            if not closing:
                self.open[task] = None
                self.changed.notify_all()
        if closing:
            task.cancel()
        else:
            self._pool.submit(task.try_run)
        return task

    def wait_any(self, tasks: Collection[Task[T]]) -> list[Task[T]]:
        """The tasks of `tasks` that are done, at least one; helps while waiting."""
        while True:
            with self.changed:
                done = [t for t in tasks if t.done]
                if done:
                    return done
                helping = self._unstarted(tasks)
                if helping is None:
                    self.changed.wait()
                    continue
            helping.try_run()  # a lost race for it just means another look

    def _unstarted(self, own: Collection[Task[T]]) -> Task[Any] | None:
        """What this thread may start: nothing unless it is a pool thread running a
        task; one of `own`; else, not nested, the newest task nobody started."""
        depth = getattr(self.nesting, "depth", 0)
        if depth == 0:
            return None
        for task in own:
            if not task.started:
                return task
        if depth >= MAX_NESTING:
            return None
        return next((t for t in reversed(self.open) if not t.started), None)

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
            with self.changed:
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
