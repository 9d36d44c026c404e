"""A whole stack of its own for the tests that stop or restart its services.

Stopping a broker or restarting PostgreSQL would break every other user of the shared
stack, so those tests get a private one: scripts/stack with its own state directory and
free ports (PostgreSQL, Kafka, Kafka Connect; about 10-20 s with warm jar caches). One
per session (`private_stack` in conftest.py), shared by the tests that need it.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from cdc_recon.pg.engine import create_engine
from tests.conftest import Database
from tests.e2e.pipeline import Endpoints
from tests.e2e.processes import Stack


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
    raise RuntimeError("no four free ports in a row between 30000 and 39000")


def start_private_stack() -> Iterator[tuple[Stack, Endpoints]]:
    """Starts a private stack, yields it with its endpoints, stops and removes it after.
    Its state directory must be readable by `postgres`."""
    state = Path(tempfile.mkdtemp(prefix="cdcr-e2e-stack-"))
    os.chmod(state, 0o755)
    # a broker, a PostgreSQL and a Connect worker of its own; no MariaDB and no schema
    # registry (not needed here; the shared stack's hold their ports)
    own = {
        "CDC_RECON_STACK_DIR": str(state),
        "CDC_RECON_STACK_MARIADB": "0",
        "CDC_RECON_STACK_REGISTRY": "0",
    }
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


def fresh_schema(url: str) -> Iterator[Database]:
    """A new schema in the database at `url` (which goes away with its stack)."""
    engine = create_engine(url)
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield Database(url=url, engine=engine, schema=schema)
    finally:
        engine.dispose()
