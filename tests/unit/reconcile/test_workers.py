"""The run's shared worker threads: bounded, helping, ordered, cancellable (no database)."""

from __future__ import annotations

import functools
import threading

import pytest

from cdc_recon.reconcile.workers import Cancelled, Workers

WAIT = 10.0  # seconds an event may take before a test fails (never reached when it passes)


def table_job(workers: Workers, name: str, segments: int, seen: list[tuple[str, int]]) -> str:
    """Like a table's checksum check: fans segments out and gathers them."""

    def segment(i: int) -> int:
        seen.append((name, threading.get_ident()))
        return i

    tasks = [workers.submit(functools.partial(segment, i)) for i in range(segments)]
    assert workers.gather(tasks) == list(range(segments))
    return name


def test_tables_and_their_segments_share_the_bounded_threads() -> None:
    seen: list[tuple[str, int]] = []
    with Workers(2) as workers:
        jobs = [
            workers.submit(functools.partial(table_job, workers, f"t{i}", 20, seen))
            for i in range(5)
        ]
        assert [job.outcome() for job in jobs] == ["t0", "t1", "t2", "t3", "t4"]
    assert len(seen) == 100
    assert threading.get_ident() not in {ident for _, ident in seen}
    assert len({ident for _, ident in seen}) <= 2


@pytest.mark.timeout(30)
def test_a_job_on_the_only_thread_runs_its_own_segments() -> None:
    seen: list[tuple[str, int]] = []
    with Workers(1) as workers:
        job = workers.submit(functools.partial(table_job, workers, "t", 5, seen))
        assert job.outcome() == "t"
    assert len(seen) == 5


def test_a_waiting_job_reads_the_other_side_of_a_segment_another_thread_runs() -> None:
    segment_started, other_side_read = threading.Event(), threading.Event()

    def segment() -> bool:  # like a segment reading one side while the other is queued
        segment_started.set()
        workers.submit(other_side_read.set)
        return other_side_read.wait(WAIT)

    def table() -> list[bool]:  # waits for a segment that the other thread claimed
        segment_started.wait(WAIT)
        workers.wait_any([first])
        return [first.outcome()]

    with Workers(2) as workers:
        first = workers.submit(segment)
        job = workers.submit(table)
        assert job.outcome() == [True]


def test_tables_run_at_once_and_results_come_in_submission_order() -> None:
    second_ran = threading.Event()

    def first() -> bool:
        return second_ran.wait(WAIT)  # False if the tables ran one after another

    def second() -> str:
        second_ran.set()
        return "second"

    with Workers(2) as workers:
        jobs = [workers.submit(first), workers.submit(second)]
        assert [job.outcome() for job in jobs] == [True, "second"]


def test_an_error_reaches_whoever_asks_for_the_outcome() -> None:
    def broken() -> int:
        raise ValueError("boom")

    with Workers(2) as workers:
        task = workers.submit(broken)
        with pytest.raises(ValueError, match="boom"):
            task.outcome()


def test_closing_with_cancel_starts_nothing_new() -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def blocking() -> str:
        started.set()
        release.wait(WAIT)
        return "done"

    workers = Workers(1)
    running = workers.submit(blocking)
    queued = workers.submit(lambda: ran.append("queued"))
    assert started.wait(WAIT)
    closer = threading.Thread(target=functools.partial(workers.close, cancel=True))
    closer.start()
    with pytest.raises(Cancelled):
        queued.outcome()
    release.set()
    closer.join(WAIT)
    assert running.outcome() == "done" and ran == []
    with pytest.raises(Cancelled):
        workers.submit(lambda: ran.append("late")).outcome()
    assert ran == []


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Workers(0)
