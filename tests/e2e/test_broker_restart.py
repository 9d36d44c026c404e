"""The Kafka broker stopped and started under the running pipeline.

Stopping a broker would break every other user of the shared stack, so this test starts
a private stack of its own (scripts/stack with its own state directory and ports:
PostgreSQL, Kafka, Kafka Connect; about 10 s with warm jar caches) and stops that one's
broker with `scripts/stack down kafka` while Debezium and cdc-recon stream through it.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cdc_recon.pg.engine import create_engine
from tests.conftest import Database
from tests.e2e.pipeline import Endpoints, Pipeline, pipeline_factory
from tests.e2e.processes import Stack, wait_until
from tests.e2e.test_faults import COUNT, RATE, check_converged, recovery

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

BROKER_DOWN = 10.0  # seconds the broker stays stopped


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports() -> dict[str, str]:
    """Kafka (and the controller's next port), PostgreSQL and Connect ports, all free."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(30000, 39000, 10)
        if all(_free(base + i) for i in range(4)):
            return {
                "CDC_RECON_STACK_KAFKA_PORT": str(base),
                "CDC_RECON_STACK_PG_PORT": str(base + 2),
                "CDC_RECON_STACK_CONNECT_PORT": str(base + 3),
            }
    pytest.fail("no four free ports in a row between 30000 and 39000")


@pytest.fixture(scope="module")
def private_stack(shared_stack: Stack) -> Iterator[tuple[Stack, Endpoints]]:
    """A whole stack of its own; its state directory must be readable by `postgres`."""
    state = Path(tempfile.mkdtemp(prefix="cdcr-e2e-stack-"))
    os.chmod(state, 0o755)
    # a broker, a PostgreSQL and a Connect worker of its own; no MariaDB (not needed here)
    own = {"CDC_RECON_STACK_DIR": str(state), "CDC_RECON_STACK_MARIADB": "0"}
    stack = Stack({**own, **free_ports()})
    try:
        started = time.monotonic()
        stack.run("up", timeout=300)
        print(f"\n[e2e] private stack up in {time.monotonic() - started:.1f}s")
        found = stack.variables()
        yield (
            stack,
            Endpoints(
                found["CDC_RECON_KAFKA_BOOTSTRAP"],
                found["CDC_RECON_SOURCE_URL"],
                found["CDC_RECON_TARGET_URL"],
            ),
        )
    finally:
        stack.run("down", check=False)
        shutil.rmtree(state, ignore_errors=True)


def _schema(url: str) -> Iterator[Database]:
    engine = create_engine(url)
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield Database(url=url, engine=engine, schema=schema)
    finally:
        engine.dispose()  # the private cluster goes away with its stack


@pytest.fixture
def private_pipeline(private_stack: tuple[Stack, Endpoints], tmp_path: Path) -> Iterator[Pipeline]:
    stack, endpoints = private_stack
    for source in _schema(endpoints.source_url):
        for target in _schema(endpoints.target_url):
            for make in pipeline_factory(stack, endpoints, tmp_path):
                yield make(source, target)


def test_kafka_broker_stopped_and_started(
    private_pipeline: Pipeline,
    private_stack: tuple[Stack, Endpoints],
    record: Callable[..., object],
) -> None:
    stack, _ = private_stack
    pipeline = private_pipeline
    service = pipeline.start_service()
    work = pipeline.workload(COUNT, RATE, seed=16).start()
    wait_until(lambda: pipeline.ledger_count() >= 800, "the service to apply changes", 60)

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
