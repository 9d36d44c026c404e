"""MariaDB → Debezium MariaDB connector → Kafka → cdc-recon → PostgreSQL, under faults.

The MySQL-typed shop (`cdc_recon.workload.mariadb`: BIGINT UNSIGNED to 2^64-1, TINYINT(1)
and BIT(1) booleans, DATETIME(6) and TIMESTAMP(6), DECIMAL, JSON, ENUM, SET, utf8mb4 text
with emoji, BLOB, zero dates, a composite key) streams through the real connector while
each test injects one fault; each then waits (with a deadline) until the PostgreSQL
target equals the MariaDB source row for row (`tests.e2e.compare_mariadb`, which says
what it normalises) and the ledger holds one change id per source change. Each records
the seconds from the end of the fault (or of the workload) to convergence and the
end-to-end events/s, printed with the PostgreSQL ones at the end of the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cdc_recon.sweep.sweeper import sweep_once
from tests.conftest import Database, Services
from tests.e2e.mariadb_pipeline import MariaDbPipeline, MariaDbWorkload
from tests.e2e.pipeline import Endpoints
from tests.e2e.processes import Stack, wait_until
from tests.e2e.proxy import TcpProxy
from tests.e2e.test_faults import _through, dead_letters, move_offsets
from tests.integration.events import send

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

COUNT, RATE = 3000, 300  # ten seconds of changes
OUTAGE = 15.0  # seconds the target database is unreachable


@pytest.fixture
def mariadb_pipeline(
    shared_stack: Stack, services: Services, target_db: Database, tmp_path: Path
) -> Iterator[MariaDbPipeline]:
    url = os.environ.get("CDC_RECON_MARIADB_URL") or shared_stack.variables().get(
        "CDC_RECON_MARIADB_URL"
    )
    if not url:
        pytest.skip("MariaDB is off in scripts/stack (--no-mariadb or CDC_RECON_STACK_MARIADB=0)")
    endpoints = Endpoints(services.kafka_bootstrap, services.source_url, services.target_url)
    pipeline = MariaDbPipeline(shared_stack, endpoints, url, target_db, tmp_path)
    try:
        yield pipeline.setup()
    finally:
        pipeline.close()


def converged(
    pipeline: MariaDbPipeline, work: MariaDbWorkload, fault_over: float
) -> tuple[int, float, float]:
    """Waits for convergence, checks one ledger row per change; (changes, s, events/s)."""
    summary = work.join()
    converged_at = pipeline.wait_converged()
    lost, unexpected = pipeline.exactly_once()
    assert not lost and not unexpected, (lost, sorted(unexpected)[:5])
    converge = converged_at - max(fault_over, work.finished)
    return summary.total, converge, summary.total / (converged_at - work.started)


def test_mariadb_types_stream_exactly_once(
    mariadb_pipeline: MariaDbPipeline, record: Callable[..., object]
) -> None:
    """Unthrottled: also how fast each stage goes (source, Debezium, end to end)."""
    pipeline = mariadb_pipeline
    service = pipeline.start_service()
    work = pipeline.workload(6000, 0, seed=21).start()
    summary = work.join()
    published_at = wait_until(
        lambda: pipeline.published() >= pipeline.messages() and time.monotonic(),
        "Debezium to publish every change",
        120,
    )
    changes, converge, rate = converged(pipeline, work, work.finished)
    assert pipeline.published() == pipeline.messages()
    assert pipeline.failures() == [], pipeline.failures()[:3]
    # the values that need care, in the target as the source holds them
    with pipeline.target.engine.connect() as conn:
        found = conn.execute(
            sa.text(
                f"SELECT max(loyalty_points), bool_or(vip), count(*) FILTER (WHERE tier LIKE "
                f"'%%★') FROM \"{pipeline.target.schema}\".customers"
            )
        ).one()
    assert found[0] == 2**64 - 1 and found[1] is True and found[2] > 0, found
    assert service.stop() == 0, service.stderr[-3000:]

    # The whole stream again from Kafka, oldest first: binlog positions guard every key,
    # so nothing moves back and nothing is applied twice.
    ids = sorted(pipeline.ledger_ids())
    replay = replay_from_kafka(pipeline)
    assert replay["applied"] == 0 and replay["duplicates"] >= changes, replay
    assert sorted(pipeline.ledger_ids()) == ids and pipeline.diff().ok
    source_rate = summary.total / (work.finished - work.started)
    debezium = summary.total / (published_at - work.started)
    record(
        "mariadb: MySQL types (unthrottled)", changes, converge, rate,
        f"source {source_rate:.0f} changes/s, Debezium published {debezium:.0f} events/s; "
        f"replayed from Kafka: {replay['duplicates']} duplicates, 0 applied",
    )  # fmt: skip


def replay_from_kafka(pipeline: MariaDbPipeline) -> dict[str, int]:
    """`cdc-recon replay --source kafka` of the last hour; its JSON summary."""
    command = [sys.executable, "-m", "cdc_recon.cli", "-c", str(pipeline.path), "replay"]
    command += ["--from", "-1h", "--source", "kafka", "--json"]
    env = {**os.environ, "CDC_RECON_SOURCE_URL": pipeline.mariadb_url}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, int] = json.loads(done.stdout)
    return summary


def test_mariadb_kill_9_mid_stream_and_restart(
    mariadb_pipeline: MariaDbPipeline, record: Callable[..., object]
) -> None:
    pipeline = mariadb_pipeline
    first = pipeline.start_service()
    work = pipeline.workload(COUNT, RATE, seed=22).start()
    wait_until(lambda: pipeline.ledger_count() >= 600, "the service to apply changes", 60)
    first.kill9()
    killed = time.monotonic()
    at_kill = pipeline.ledger_count()
    assert work.running and at_kill < COUNT, "the kill was not mid-stream"
    second = pipeline.start_service()
    restarted = time.monotonic()
    changes, converge, rate = converged(pipeline, work, restarted)
    assert second.stop() == 0, second.stderr[-3000:]
    detail = f"killed at {at_kill}; restarted and rejoined in {restarted - killed:.1f}s"
    record("mariadb: kill -9 of cdc-recon", changes, converge, rate, detail)


def mariadb_poison(pipeline: MariaDbPipeline) -> list[tuple[str, bytes | None, bytes, int, str]]:
    """(topic, key, value, partition, expected reason): undecodable, unmapped, invalid."""
    customers, orders = pipeline.topics[0], pipeline.topics[2]
    db = pipeline.mariadb.database
    big = 10**15  # no such key in the source

    def event(table: str, key: int, after: dict[str, object]) -> bytes:
        source = {
            "connector": "mariadb", "db": db, "table": table, "ts_ms": int(time.time() * 1000),
            "file": "mariadb-bin.000001", "pos": 4, "row": 0, "gtid": "0-1-999999999",
        }  # fmt: skip
        payload = {"before": None, "after": {"id": key, **after}, "source": source, "op": "c"}
        return json.dumps({"payload": payload}).encode()

    return [
        (customers, b'{"id": 1}', b"\x00\xffnot json", 0, "undecodable"),
        (orders, b'{"id": 2}', event("nowhere", big, {}), 1, "unmapped"),
        (
            orders,
            json.dumps({"id": big}).encode(),
            event("orders", big, {"customer_id": 1, "status": "new", "total": "12.345",
                                  "currency": "EUR", "placed_at": 0}),
            0,
            "invalid",
        ),
    ]  # fmt: skip


def test_mariadb_poison_messages_are_quarantined(
    mariadb_pipeline: MariaDbPipeline, record: Callable[..., object]
) -> None:
    pipeline = mariadb_pipeline
    service = pipeline.start_service()
    work = pipeline.workload(COUNT, RATE, seed=23).start()
    wait_until(lambda: pipeline.ledger_count() >= 300, "the service to apply changes", 60)
    poison = mariadb_poison(pipeline)
    for topic, key, value, partition, _ in poison:
        send(pipeline.endpoints.kafka_bootstrap, topic, [(key, value, partition)])
    injected = time.monotonic()
    changes, converge, rate = converged(pipeline, work, injected)
    wait_until(lambda: len(pipeline.failures()) >= len(poison), "every poison quarantined", 30)
    found = sorted((t, p, reason) for t, p, _, reason in pipeline.failures())
    assert found == sorted((t, p, reason) for t, _, _, p, reason in poison)
    assert dead_letters(pipeline, len(poison)) == len(poison)
    assert service.stop() == 0, service.stderr[-3000:]
    record("mariadb: poison messages", changes, converge, rate, f"{len(poison)} quarantined")


def test_mariadb_offsets_moved_past_a_range_are_healed_by_the_sweeper(
    mariadb_pipeline: MariaDbPipeline, record: Callable[..., object]
) -> None:
    pipeline = mariadb_pipeline
    first = pipeline.start_service()
    pipeline.workload(1500, 0, seed=24).start().join()
    pipeline.wait_converged()
    assert first.stop() == 0
    work = pipeline.workload(3000, 0, seed=25).start()
    work.join()
    wait_until(lambda: pipeline.published() >= pipeline.messages(), "Debezium to publish", 120)
    skipped = move_offsets(pipeline, 150)
    assert skipped >= 300
    second = pipeline.start_service()
    wait_until(pipeline.caught_up, "the group to read to the end", 120)
    lost, _ = pipeline.exactly_once()
    assert lost and not pipeline.diff().ok, "the moved offsets lost nothing?"

    swept = time.monotonic()
    run = sweep_once(pipeline.settings())  # kafka_topic: the skipped messages, from Kafka
    assert run.status == "ok" and run.missed > 0, run.summary()
    assert (run.replayed, run.replay_failed) == (run.missed, 0), run.summary()
    converged_at = pipeline.wait_converged(60, complete=False)
    # a skipped change whose key later changed again is superseded: the target holds the
    # newer row, and the ledger no entry for it; every other one is in the ledger once
    made, ids = pipeline.changelog_count(), pipeline.ledger_ids()
    assert len(ids) == len(set(ids)) == made - run.superseded, (made, len(ids), run.summary())
    assert sweep_once(pipeline.settings()).missed == 0
    assert second.stop() == 0, second.stderr[-3000:]
    total = pipeline.changelog_count()
    record(
        "mariadb: offsets moved, sweep",
        total,
        converged_at - swept,
        total / (converged_at - work.started),
        f"{skipped} messages skipped; sweep: missed {run.missed}, replayed {run.replayed}, "
        f"superseded {run.superseded}, {run.seconds:.1f}s",
    )


def test_mariadb_target_database_unreachable(
    mariadb_pipeline: MariaDbPipeline, record: Callable[..., object]
) -> None:
    pipeline = mariadb_pipeline
    target = sa.engine.make_url(pipeline.endpoints.target_url)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        url = _through(proxy, pipeline.endpoints.target_url)
        service = pipeline.start_service(CDC_RECON_TARGET_URL=url)
        work = pipeline.workload(COUNT, RATE, seed=26).start()
        wait_until(lambda: pipeline.ledger_count() >= 600, "the service to apply changes", 60)
        proxy.cut()
        during = pipeline.ledger_count()
        threading.Event().wait(OUTAGE)  # the outage itself, not a synchronisation
        assert service.alive(), service.stderr[-3000:]
        assert pipeline.ledger_count() == during, "written while the target was unreachable?"
        proxy.restore()
        restored = time.monotonic()
        changes, converge, rate = converged(pipeline, work, restored)
        assert "retrying" in service.stderr
        assert service.stop() == 0, service.stderr[-3000:]
    record("mariadb: target unreachable 15 s", changes, converge, rate, f"cut at {during}")
