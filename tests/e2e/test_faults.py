"""The real pipeline under faults; each converges with nothing lost and nothing applied twice.

Every test streams the workload through Debezium into cdc-recon, injects one fault while
changes flow, then waits (with a deadline) until the target equals the source row for
row and the ledger holds exactly the change log's change ids. It records the seconds
from the end of the fault (or of the workload, whichever is later) to convergence, and
the end-to-end events/s (bounded here by the workload's paced rate).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition

from cdc_recon.sweep.sweeper import sweep_once
from tests.e2e.pipeline import Pipeline
from tests.e2e.processes import WorkloadThread
from tests.e2e.proxy import TcpProxy
from tests.integration.events import envelope, key_bytes, send

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

COUNT, RATE = 4000, 400  # ten seconds of changes
OUTAGE = 20.0  # seconds the target database is unreachable


def check_converged(
    pipeline: Pipeline, work: WorkloadThread, fault_over: float
) -> tuple[int, float, float]:
    """Waits for convergence, checks exactly-once; (changes, converge s, events/s)."""
    summary = work.join()
    converged_at = pipeline.wait_converged()
    lost, unexpected = pipeline.exactly_once()
    assert not lost and not unexpected, (sorted(lost)[:5], sorted(unexpected)[:5])
    assert pipeline.changelog_count() == summary.total
    converge = converged_at - max(fault_over, work.finished)
    return summary.total, converge, summary.total / (converged_at - work.started)


def recovery(pipeline: Pipeline, since: float) -> float:
    """Seconds from `since` until the ledger holds every change the source had made by now."""
    made = pipeline.changelog_count()
    pipeline.wait(lambda: pipeline.ledger_count() >= made, "the service to catch up", 120)
    return time.monotonic() - since


def test_kill_9_mid_stream_and_restart(pipeline: Pipeline, record: Callable[..., object]) -> None:
    first = pipeline.start_service()
    work = pipeline.workload(COUNT, RATE, seed=11).start()
    pipeline.wait(lambda: pipeline.ledger_count() >= 800, "the service to apply changes", 60)
    first.kill9()
    killed = time.monotonic()
    applied_at_kill = pipeline.ledger_count()
    assert work.running and applied_at_kill < COUNT, "the kill was not mid-stream"

    second = pipeline.start_service()
    restarted = time.monotonic()
    recovered = recovery(pipeline, killed)
    changes, converge, rate = check_converged(pipeline, work, restarted)
    assert second.stop() == 0, second.stderr[-3000:]
    detail = (
        f"killed at {applied_at_kill}; restarted and rejoined in {restarted - killed:.1f}s, "
        f"caught up {recovered:.1f}s after the kill"
    )
    record("kill -9 of cdc-recon, restart", changes, converge, rate, detail)


def _through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


def test_target_database_unreachable_for_20s(
    pipeline: Pipeline, record: Callable[..., object]
) -> None:
    target = urlsplit(pipeline.endpoints.target_url)
    with TcpProxy((target.hostname or "127.0.0.1", target.port or 5432)) as proxy:
        service = pipeline.start_service(CDC_RECON_TARGET_URL=_through(proxy, target.geturl()))
        work = pipeline.workload(COUNT, RATE, seed=12).start()
        pipeline.wait(lambda: pipeline.ledger_count() >= 800, "the service to apply changes", 60)
        proxy.cut()
        # A commit already past the proxy when it was cut may still land: read the count
        # once the service has seen the outage (its first retry), not at the cut.
        pipeline.wait(lambda: "retrying" in service.stderr, "the service to see the outage", 60)
        during = pipeline.ledger_count()
        threading.Event().wait(OUTAGE)  # the outage itself, not a synchronisation
        assert service.alive(), service.stderr[-3000:]
        assert pipeline.ledger_count() == during, "written while the target was unreachable?"
        proxy.restore()
        restored = time.monotonic()
        recovered = recovery(pipeline, restored)
        changes, converge, rate = check_converged(pipeline, work, restored)
        assert "retrying" in service.stderr
        assert service.stop() == 0, service.stderr[-3000:]
    detail = f"cut at {during}; caught up {recovered:.1f}s after the target came back"
    record("target database unreachable 20 s", changes, converge, rate, detail)


def poison_messages(pipeline: Pipeline) -> list[tuple[str, bytes | None, bytes, int, str]]:
    """(topic, key, value, partition, expected reason) of five poison messages."""
    schema = pipeline.source.schema
    customers, orders = pipeline.topics[0], pipeline.topics[2]
    where = {"lsn": 10**12, "tx": 4_000_000_000, "ts_ms": int(time.time() * 1000)}
    big = 10**12  # no such key in the source
    return [
        (customers, b'{"id": 1}', b"\x00\xffnot json at all", 0, "undecodable"),
        (orders, b'{"id": 2}', b'{"payload": {"op": "c", "source": "nonsense"}}', 1, "undecodable"),
        (
            orders,
            key_bytes({"id": big}),
            envelope("c", schema="elsewhere", table="orders", after={"id": big}, **where),
            0,
            "unmapped",
        ),
        (
            customers,
            key_bytes({"id": big}),
            envelope("c", schema=schema, table="customers", after={"id": big, "bogus": 1}, **where),
            1,
            "unmapped",
        ),
        (
            customers,
            key_bytes({"id": big + 1}),
            envelope(
                "c",
                schema=schema,
                table="customers",
                after={"id": big + 1, "name": None, "created_at": "2024-01-01T00:00:00Z"},
                **where,
            ),
            0,
            "rejected",
        ),
    ]


def test_poison_messages_in_the_topics_are_quarantined(
    pipeline: Pipeline, record: Callable[..., object]
) -> None:
    service = pipeline.start_service()
    work = pipeline.workload(COUNT, RATE, seed=13).start()
    pipeline.wait(lambda: pipeline.ledger_count() >= 500, "the service to apply changes", 60)
    poison = poison_messages(pipeline)
    for topic, key, value, partition, _ in poison:
        send(pipeline.endpoints.kafka_bootstrap, topic, [(key, value, partition)])
    injected = time.monotonic()
    changes, converge, rate = check_converged(pipeline, work, injected)

    pipeline.wait(lambda: len(pipeline.failures()) >= len(poison), "every poison quarantined", 30)
    found = sorted((t, p, reason) for t, p, _, reason in pipeline.failures())
    assert found == sorted((t, p, reason) for t, _, _, p, reason in poison)
    assert dead_letters(pipeline, len(poison)) == len(poison)
    assert service.stop() == 0, service.stderr[-3000:]
    record("poison messages in the topics", changes, converge, rate, f"{len(poison)} quarantined")


def dead_letters(pipeline: Pipeline, expected: int) -> int:
    consumer = Consumer(
        {"bootstrap.servers": pipeline.endpoints.kafka_bootstrap, "group.id": "e2e-dlq-reader"}
    )
    consumer.assign([TopicPartition(pipeline.dead_letter_topic, 0, 0)])
    seen = 0
    deadline = time.monotonic() + 30
    try:
        while seen < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            seen += msg is not None and msg.error() is None
    finally:
        consumer.close()
    return seen


def move_offsets(pipeline: Pipeline, skip: int) -> int:
    """Moves the group's stored (and committed) offsets of the customers and orders topics
    `skip` messages forward, past messages it never applied; returns how many were skipped."""
    stored, ends = pipeline.stored_offsets(), pipeline.high_watermarks()
    moved: dict[tuple[str, int], int] = {}
    for key in ends:
        if key[0] in (pipeline.topics[0], pipeline.topics[2]) and key in stored:
            moved[key] = min(stored[key] + skip, ends[key])
    with pipeline.target.engine.begin() as conn:
        for (topic, partition), offset in moved.items():
            conn.execute(
                sa.text(
                    f'UPDATE "{pipeline.target.schema}".offsets SET next_offset = :o '
                    "WHERE group_id = :g AND topic = :t AND kafka_partition = :p"
                ),
                {"o": offset, "g": pipeline.name, "t": topic, "p": partition},
            )
    consumer = Consumer(
        {"bootstrap.servers": pipeline.endpoints.kafka_bootstrap, "group.id": pipeline.name}
    )
    try:
        commits = [TopicPartition(t, p, o) for (t, p), o in moved.items()]
        consumer.commit(offsets=commits, asynchronous=False)
    finally:
        consumer.close()
    return sum(offset - stored[key] for key, offset in moved.items())


def toast_gaps(pipeline: Pipeline) -> list[tuple[object, ...]]:
    """Keys of customers whose only difference is a target `bio` of NULL: the TOASTed
    column an insert set, when the insert was lost and a later update (carrying Debezium's
    unchanged-TOAST placeholder instead of the bio) created the row."""
    diff = pipeline.diff()
    gaps = []
    for table in diff.tables:
        for key, columns in table.changed:
            if table.source.endswith(".customers") and set(columns) == {"bio"}:
                if columns["bio"][1] is None:
                    gaps.append(key)
    others = diff.differences - len(gaps)
    assert others == 0, f"differences besides TOAST gaps:\n{diff.summary()}"
    return gaps


def lose_a_range(pipeline: Pipeline) -> tuple[WorkloadThread, int, int]:
    """Applies a first workload, stops the service, runs a second one and moves the group's
    offsets past part of it: (the second workload, changes of both, messages skipped)."""
    first = pipeline.start_service()
    before = pipeline.workload(1500, 0, seed=14).start().join()
    pipeline.wait_converged()
    assert first.stop() == 0

    work = pipeline.workload(3000, 0, seed=15).start()
    summary = work.join()
    total = before.total + summary.total
    deletes = before.by_kind()["delete"] + summary.by_kind()["delete"]
    pipeline.wait(lambda: pipeline.published() >= total + deletes, "Debezium to publish", 120)
    skipped = move_offsets(pipeline, 150)
    assert skipped >= 300
    return work, total, skipped


def test_offsets_moved_past_a_range_are_healed_by_the_sweeper(
    pipeline: Pipeline, record: Callable[..., object]
) -> None:
    work, total, skipped = lose_a_range(pipeline)
    second = pipeline.start_service()
    pipeline.wait(pipeline.caught_up, "the group to read to the end", 120)
    lost, _ = pipeline.exactly_once()
    assert lost and not pipeline.diff().ok, "the moved offsets lost nothing?"

    swept = time.monotonic()
    run = sweep_once(pipeline.settings())
    assert run.status == "ok" and run.in_flight == 0, run.summary()
    assert run.missed > 0 and (run.replayed, run.replay_failed) == (run.missed, 0), run.summary()
    # pg_trigger knows no Kafka coordinates: a missed change is replayed by re-reading its
    # key's current row, which the ledger records under the re-reading transaction's id.
    still_lost, rereads = pipeline.exactly_once()
    real_txs = {change_id.rsplit(":", 1)[1] for change_id in pipeline.changelog_ids()}
    assert not {r for r in rereads if r.rsplit(":", 1)[1] in real_txs}, "a change applied twice"
    assert 0 < len(rereads) <= run.replayed
    assert len(still_lost) == run.superseded + run.missed
    assert sweep_once(pipeline.settings()).missed == 0

    # A lost insert whose later update carried Debezium's unchanged-TOAST placeholder is
    # not superseded (key_state.incomplete): the sweeper re-read the full row.
    assert toast_gaps(pipeline) == [], "a TOASTed column left empty"
    converged_at = pipeline.wait_converged(30, complete=False)
    assert second.stop() == 0, second.stderr[-3000:]
    record(
        "offsets moved past a range, sweep",
        total,
        converged_at - swept,
        total / (converged_at - work.started),
        f"{skipped} messages skipped; sweep: missed {run.missed}, replayed {run.replayed}, "
        f"superseded {run.superseded}, {run.seconds:.1f}s",
    )
