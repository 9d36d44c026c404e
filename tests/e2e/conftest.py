"""Fixtures of the end-to-end tests: the real Debezium connector in the loop.

They need the Kafka Connect worker of scripts/stack (`scripts/stack up` starts it with
Kafka and PostgreSQL) and skip, saying so, when it is not running or when the test
services (CDC_RECON_*) are not the stack's. Each test gets its own source and target
schema, connector, slot, publication and topics (`pipeline.Pipeline`).

Tests that stop or restart a service run on `private_stack` (private.py) instead; with
`cpu_hog` a busy process holds one core for the whole test.

Every test records the seconds from the end of its fault (or of the workload, when that
ends later) until the target equals the source, and the end-to-end events/s (changes
over the time from the workload's first change to convergence); the table is printed at
the end of the run (and each line as it happens with `-s`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Database, Services
from tests.e2e.pipeline import Endpoints, Pipeline, pipeline_factory
from tests.e2e.private import fresh_schema, start_private_stack
from tests.e2e.processes import CpuHog, Stack


@dataclass(frozen=True)
class Result:
    """One test's measurements."""

    test: str
    changes: int
    converge_seconds: float
    events_per_second: float
    detail: str = ""

    def line(self) -> str:
        return (
            f"{self.test:<34} {self.changes:>5} changes, equal {self.converge_seconds:4.1f}s "
            f"after fault and workload ended, {self.events_per_second:5.0f} events/s end to end"
            + (f"\n{'':<36}({self.detail})" if self.detail else "")
        )


RESULTS: list[Result] = []


@pytest.fixture
def record() -> Callable[..., Result]:
    def add(test: str, changes: int, converge: float, eps: float, detail: str = "") -> Result:
        result = Result(test, changes, converge, eps, detail)
        RESULTS.append(result)
        print(f"\n[e2e] {result.line()}")
        return result

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("end to end with Debezium: convergence and throughput")
    for result in RESULTS:
        terminalreporter.write_line(result.line())


@pytest.fixture(scope="session")
def shared_stack(services: Services) -> Stack:
    """The stack of scripts/stack that `services` runs on, with its Connect worker."""
    stack = Stack()
    named = stack.variables()
    expected = {
        "CDC_RECON_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "CDC_RECON_SOURCE_URL": services.source_url,
        "CDC_RECON_TARGET_URL": services.target_url,
    }
    if any(named.get(name) != value for name, value in expected.items()):
        pytest.skip("end-to-end tests run on scripts/stack's services, not the CDC_RECON_* given")
    if not stack.connect_running():
        pytest.skip(
            "Kafka Connect is not running: `scripts/stack up` starts it "
            "(unless --no-connect or CDC_RECON_STACK_CONNECT=0)"
        )
    return stack


@pytest.fixture
def make_pipeline(
    shared_stack: Stack, services: Services, tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    endpoints = Endpoints(services.kafka_bootstrap, services.source_url, services.target_url)
    yield from pipeline_factory(shared_stack, endpoints, tmp_path)


@pytest.fixture
def pipeline(
    make_pipeline: Callable[..., Pipeline], source_db: Database, target_db: Database
) -> Pipeline:
    """A streaming pipeline on the shared stack, in this test's source and target schemas."""
    return make_pipeline(source_db, target_db)


@pytest.fixture(scope="session")
def private_stack(shared_stack: Stack) -> Iterator[tuple[Stack, Endpoints]]:
    """A whole stack of its own, for tests that stop or restart its services (private.py)."""
    yield from start_private_stack()


@pytest.fixture
def make_private_pipeline(
    private_stack: tuple[Stack, Endpoints], tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    """A maker of pipelines on the private stack, each in fresh schemas of its own."""
    stack, endpoints = private_stack
    schemas: list[Iterator[Database]] = []
    pipelines = pipeline_factory(stack, endpoints, tmp_path)
    maker = next(pipelines)

    def make(**options: object) -> Pipeline:
        made = [fresh_schema(endpoints.source_url), fresh_schema(endpoints.target_url)]
        schemas.extend(made)
        source, target = (next(m) for m in made)
        return maker(source, target, **options)

    yield make
    next(pipelines, None)  # closes the pipelines
    for schema in schemas:
        next(schema, None)  # disposes of the engines


@pytest.fixture
def cpu_hog() -> Iterator[CpuHog]:
    """One core kept busy for the whole test (a loaded host), stopped after it."""
    hog = CpuHog(core=0)
    try:
        yield hog
    finally:
        hog.stop()
