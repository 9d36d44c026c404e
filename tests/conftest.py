"""Fixtures for tests that talk to the real Kafka and PostgreSQL.

Services are found in this order:
1. `CDC_RECON_KAFKA_BOOTSTRAP`, `CDC_RECON_SOURCE_URL`, `CDC_RECON_TARGET_URL` when set;
2. otherwise `scripts/stack up` starts the project's own stack (idempotent) and
   `scripts/stack env` names it;
3. testcontainers is used instead only when `CDC_RECON_TEST_DOCKER=1` and a Docker engine
   answers.

Unit tests never request these fixtures, so `pytest tests/unit` needs no service.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient, NewTopic

from cdc_recon.pg.engine import create_engine

ROOT = Path(__file__).resolve().parents[1]
ENV_NAMES = ("CDC_RECON_KAFKA_BOOTSTRAP", "CDC_RECON_SOURCE_URL", "CDC_RECON_TARGET_URL")
# Services started by tests (in-process or `cdc-recon run`) serve monitoring on a free
# port, not 9464: several may run at once. A test that needs the port sets its own.
os.environ.setdefault("CDC_RECON_MONITORING__PORT", "0")


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    source_url: str
    target_url: str


def _from_stack_script() -> dict[str, str]:
    up = subprocess.run([str(ROOT / "scripts/stack"), "up"], capture_output=True, text=True)
    if up.returncode != 0:
        pytest.exit(f"scripts/stack up failed:\n{up.stderr}", returncode=3)
    env = subprocess.run(
        [str(ROOT / "scripts/stack"), "env"], capture_output=True, text=True, check=True
    )
    found = {}
    for line in env.stdout.splitlines():
        match = re.fullmatch(r"export (\w+)=(.*)", line.strip())
        if match:
            found[match[1]] = shlex.split(match[2])[0]
    return found


def _docker_requested() -> bool:
    if os.environ.get("CDC_RECON_TEST_DOCKER") != "1":
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True)
    return probe.returncode == 0


def _from_testcontainers(stack: pytest.TempPathFactory) -> dict[str, str]:  # pragma: no cover
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    kafka = KafkaContainer("apache/kafka:4.1.1").with_kraft().start()
    pg = PostgresContainer("postgres:15", dbname="target").with_command(
        "postgres -c wal_level=logical"
    )
    pg.start()
    url = pg.get_connection_url().replace("+psycopg2", "")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE source"))
    engine.dispose()
    return {
        "CDC_RECON_KAFKA_BOOTSTRAP": kafka.get_bootstrap_server(),
        "CDC_RECON_SOURCE_URL": url.rsplit("/", 1)[0] + "/source",
        "CDC_RECON_TARGET_URL": url,
    }


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    """Where the real Kafka and PostgreSQL are; starts them when nothing is configured."""
    found = {name: os.environ[name] for name in ENV_NAMES if os.environ.get(name)}
    if len(found) < len(ENV_NAMES):
        started = (
            _from_testcontainers(tmp_path_factory) if _docker_requested() else _from_stack_script()
        )
        found = {**started, **found}
        os.environ.update(found)
    return Services(
        kafka_bootstrap=found["CDC_RECON_KAFKA_BOOTSTRAP"],
        source_url=found["CDC_RECON_SOURCE_URL"],
        target_url=found["CDC_RECON_TARGET_URL"],
    )


@pytest.fixture(scope="session")
def kafka_admin(services: Services) -> AdminClient:
    return AdminClient({"bootstrap.servers": services.kafka_bootstrap})


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll `condition` until it is truthy and return it; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic_factory(kafka_admin: AdminClient) -> Iterator[Callable[..., str]]:
    """Creates a unique topic per call (AdminClient) and deletes it after the test."""
    created: list[str] = []

    def create(prefix: str = "test", partitions: int = 1, **config: str) -> str:
        name = unique_name(f"cdcr.{prefix}")
        futures = kafka_admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)]
        )
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield create
    if created:
        for future in kafka_admin.delete_topics(created).values():
            future.result(timeout=30)


@dataclass(frozen=True)
class Database:
    """One real database, with a schema of its own for the current test."""

    url: str
    engine: sa.Engine
    schema: str

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'


def _schema_fixture(url: str) -> Iterator[Database]:
    engine = create_engine(url)
    schema = unique_name("t")
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield Database(url=url, engine=engine, schema=schema)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def source_db(services: Services) -> Iterator[Database]:
    """The source database with a fresh schema, dropped after the test."""
    yield from _schema_fixture(services.source_url)


@pytest.fixture
def target_db(services: Services) -> Iterator[Database]:
    """The target database with a fresh schema, dropped after the test."""
    yield from _schema_fixture(services.target_url)
