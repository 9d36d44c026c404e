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

from tests.e2e.pipeline import Endpoints, Pipeline
from tests.e2e.processes import CpuHog, Stack
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
