"""The Kafka broker stopped and started under the running pipeline, on a busy host.

Stopping a broker would break every other user of the shared stack, so this test runs on
the session's private stack (`private_stack`, tests/e2e/private.py) and stops that one's
broker with `scripts/stack down kafka` while Debezium and cdc-recon stream through it.
A busy process holds one core throughout (`cpu_hog`): the stall this test once showed
happened only on a loaded host.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from cdc_recon.sweep.sweeper import sweep_once
from tests.e2e.pipeline import Endpoints, Pipeline
from tests.e2e.processes import CpuHog, Stack
from tests.e2e.stages import StageReport
from tests.e2e.test_faults import COUNT, RATE, check_converged, recovery

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

BROKER_DOWN = 10.0  # seconds the broker stays stopped


def test_kafka_broker_stopped_and_started(
    make_private_pipeline: Callable[..., Pipeline],
    private_stack: tuple[Stack, Endpoints],
    cpu_hog: CpuHog,
    record: Callable[..., object],
) -> None:
    stack, _ = private_stack
    pipeline = make_private_pipeline()
    service = pipeline.start_service()
    work = pipeline.workload(COUNT, RATE, seed=16).start()
    pipeline.wait(lambda: pipeline.ledger_count() >= 800, "the service to apply changes", 60)

    stopping = time.monotonic()
    stack.run("down", "kafka")
    stopped_in = time.monotonic() - stopping
    at_stop = pipeline.ledger_count()
    threading.Event().wait(BROKER_DOWN)  # the outage itself, not a synchronisation
    assert service.alive(), service.stderr[-3000:]
    starting = time.monotonic()
    stack.run("up")
    restarted = time.monotonic()
    recovered = recovery(pipeline, restarted)
    changes, converge, rate = check_converged(pipeline, work, restarted)
    assert "RUNNING" in stack.run("connector", "status", pipeline.name)
    assert service.stop() == 0, service.stderr[-3000:]
    record(
        "Kafka broker stopped 10 s, started",
        changes,
        converge,
        rate,
        f"stopped at {at_stop}; stop took {stopped_in:.1f}s, restart {restarted - starting:.1f}s, "
        f"caught up {recovered:.1f}s after the restart (private stack)",
    )


def test_a_stalled_connector_is_named_and_the_sweeper_fills_the_gap(
    pipeline: Pipeline, record: Callable[..., object]
) -> None:
    """When the stall is Debezium's (a task stopped, as Connect does on every broker
    restart, and not back), the stage report names it and cdc-recon's sweeper applies
    what the topics lack from the source's current rows; once the connector is back its
    late messages change no row and complete the ledger, each change once (P1, P2)."""
    service = pipeline.start_service()
    pipeline.workload(600, 0, seed=17).start().join()
    pipeline.wait_converged()
    pipeline.stack.run("connector", "pause", pipeline.name)
    paused = pipeline.workload(400, 0, seed=18).start().join()

    report = StageReport.collect(pipeline)
    assert report.verdict().startswith("Debezium -> Kafka"), report.text()
    assert "PAUSED" in report.connector, report.text()
    started = time.monotonic()
    swept = sweep_once(pipeline.settings())
    assert swept.missed > 0 and swept.replayed == swept.missed, swept.summary()
    # Row for row now; the ledger lacks the changes the sweep found superseded (a key
    # changed twice while paused: its current row is applied once, as the newest).
    healed = pipeline.wait_converged(60, complete=False) - started
    assert pipeline.ledger_count() < pipeline.changelog_count()

    pipeline.stack.run("connector", "resume", pipeline.name)
    expected = pipeline.changelog_count() + pipeline.changelog_deletes()  # + tombstones
    pipeline.wait(lambda: pipeline.published() >= expected, "Debezium to publish the backlog", 120)
    pipeline.wait(pipeline.caught_up, "the group to read the late messages", 120)
    pipeline.wait_converged()  # and now every change id is in the ledger, once
    lost, rereads = pipeline.exactly_once()
    # A re-read row is named by the re-reading transaction's xid (source_db/rows.py):
    # those ids are the ledger's only ones the change log lacks, one per key at most.
    assert not lost and 0 < len(rereads) <= swept.missed, (sorted(lost)[:5], len(rereads))
    assert service.stop() == 0, service.stderr[-3000:]
    record(
        "Debezium paused, sweeper heals",
        paused.total,
        healed,
        paused.total / healed,
        f"sweep: {swept.summary()[:120]}",
    )
