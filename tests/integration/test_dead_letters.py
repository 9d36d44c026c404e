"""Quarantine is complete (P5): every failure has its dead letter, or its row says why not.

Through `cdc-recon run` on the real Kafka and PostgreSQL, as in test_service.py (whose
`deploy` fixture these tests share): a message bigger than librdkafka's default limit
reaches a dead-letter topic the service sized itself; one too large even for the
dead-letter topic stays in `failures` as `too_large`; what a crash left `pending` is sent
by the next run.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import (  # not re-exported for mypy
    AlterConfigOpType as AlterOp,
)
from confluent_kafka.admin._config import ConfigEntry, ConfigResource

from tests.conftest import Database, Services, unique_name
from tests.integration.events import ChangeLog, KeyValue
from tests.integration.test_service import CRASH_ENV, Deployment, Target, read_all
from tests.integration.test_service import deploy as deploy  # the fixture, shared

pytestmark = pytest.mark.integration

MB = 1 << 20


def produce(services: Services, topic: str, messages: list[KeyValue]) -> None:
    """Write `messages` in order with a producer that allows big ones; all acknowledged."""
    producer = Producer(
        {"bootstrap.servers": services.kafka_bootstrap, "acks": "all", "message.max.bytes": 8 * MB}
    )
    errors: list[str] = []
    for key, value in messages:
        producer.produce(
            topic, key=key, value=value, on_delivery=lambda e, _m: e and errors.append(str(e))
        )
    assert producer.flush(30) == 0 and not errors, errors


def reconfigure(deployment: Deployment, **changes: Any) -> None:
    deployment.config.update(changes)
    deployment.path.write_text(yaml.safe_dump(deployment.config))


def failure_rows(db: Database) -> dict[int, tuple[str, str | None, bytes | None]]:
    """kafka_offset → (dead_letter, dead_letter_detail, raw_value)."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT kafka_offset, dead_letter, dead_letter_detail, raw_value "
                f"FROM {db.table('failures')} ORDER BY kafka_offset"
            )
        ).all()
    return {r[0]: (r[1], r[2], bytes(r[3]) if r[3] is not None else None) for r in rows}


def dead_letter_offsets(services: Services, dlq: str, count: int) -> list[int]:
    """The source offsets of the first `count` dead letters (read with a deadline)."""
    found = read_all(services, dlq, count)
    return sorted(int(dict(m.headers())["cdc_recon.offset"]) for m in found)


def end_offset(services: Services, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": services.kafka_bootstrap, "group.id": "peek"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def topic_limit(admin: AdminClient, topic: str) -> int:
    resource = ConfigResource("topic", topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=10)
    return int(entries["max.message.bytes"].value)


def set_topic_limit(admin: AdminClient, topic: str, limit: int) -> None:
    entry = ConfigEntry("max.message.bytes", str(limit), incremental_operation=AlterOp.SET)
    resource = ConfigResource("topic", topic, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result(timeout=10)


def wait_until(
    condition: Callable[[], bool], what: str, seen: Callable[[], object], timeout: float = 60
) -> None:
    """Poll `condition` until true; at the deadline fail naming `what` and what was seen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; saw {seen()!r}")
        time.sleep(0.1)  # polling interval, not synchronisation


@pytest.fixture
def new_topic(kafka_admin: AdminClient) -> Iterator[Callable[[], str]]:
    """Names for topics the service itself creates; deleted after the test if made."""
    names: list[str] = []

    def name() -> str:
        names.append(unique_name("cdcr.created"))
        return names[-1]

    yield name
    existing = set(kafka_admin.list_topics(timeout=10).topics)
    made = [n for n in names if n in existing]
    if made:
        for future in kafka_admin.delete_topics(made).values():
            future.result(timeout=30)


def test_a_2mb_message_reaches_a_dead_letter_topic_sized_for_it_with_its_batch(
    deploy: Callable[..., Deployment],
    services: Services,
    target_db: Database,
    topic_factory: Callable[..., str],
    new_topic: Callable[[], str],
    kafka_admin: AdminClient,
) -> None:
    """Before: the producer kept librdkafka's 1 MB limit, `send()` raised after the
    commit, exit 3, and the batch's other failures never reached the topic."""
    deployment = deploy()
    topic = topic_factory("big", **{"max.message.bytes": str(4 * MB)})
    dlq = new_topic()  # absent: the service creates it
    reconfigure(deployment, topics=[topic], dead_letter_topic=dlq)
    customers, orders = ChangeLog(), ChangeLog(table="orders")
    big = b'{"payload": "' + b"x" * (2 * MB)
    messages: list[KeyValue] = [
        customers.insert({"id": 1, "name": "ok1", "email": None}),
        (b'{"id":2}', big),
        orders.insert({"id": 3, "total": 5}),
        customers.insert({"id": 4, "name": "far too long", "email": None}),
        (b'{"id":5}', b"{not json"),
        customers.insert({"id": 6, "name": "ok6", "email": None}),
    ]
    produce(services, topic, messages)

    run = deployment.run("run", "--until-idle", "2")
    assert run.process.returncode == 0, run.stderr[-3000:]
    assert Target(target_db).rows() == {1: (1, "ok1", None), 6: (6, "ok6", None)}
    assert topic_limit(kafka_admin, dlq) >= 4 * MB, "created with room for the topic read"
    rows = failure_rows(target_db)
    assert {o: r[0] for o, r in rows.items()} == {1: "sent", 2: "sent", 3: "sent", 4: "sent"}
    found = read_all(services, dlq, 4)
    by_offset = {int(dict(m.headers())["cdc_recon.offset"]): m for m in found}
    assert sorted(by_offset) == [1, 2, 3, 4], "every failure of the batch has its dead letter"
    assert by_offset[1].value() == big
    status = json.loads(deployment.run("status", "--json").stdout)
    assert status["dead_letters"] == {"sent": 4}


def test_a_failure_too_large_for_the_dead_letter_topic_keeps_its_bytes_and_says_why(
    deploy: Callable[..., Deployment],
    services: Services,
    target_db: Database,
    topic_factory: Callable[..., str],
) -> None:
    """Before: librdkafka sent it, the broker refused it, and the flush was retried
    forever (`--until-idle` never returned)."""
    deployment = deploy()
    topic = deployment.config["topics"][0]
    dlq = topic_factory("small-dlq", **{"max.message.bytes": "100000"})
    reconfigure(deployment, dead_letter_topic=dlq)
    customers = ChangeLog()
    large = b"{" + b"y" * 300_000
    produce(
        services,
        topic,
        [
            customers.insert({"id": 1, "name": "ok1", "email": None}),
            (b'{"id":2}', large),
            (b'{"id":3}', b"{not json"),
            customers.insert({"id": 4, "name": "ok4", "email": None}),
        ],
    )

    run = deployment.run("run", "--until-idle", "2", timeout=90)
    assert run.process.returncode == 0, run.stderr[-3000:]
    rows = failure_rows(target_db)
    assert sorted(rows) == [1, 2]
    state, detail, raw = rows[1]
    assert (state, raw) == ("too_large", large), "not sent; the row keeps the bytes"
    assert detail is not None and "100000" in detail and dlq in detail, detail
    assert rows[2][0] == "sent"
    assert dead_letter_offsets(services, dlq, 1) == [2]
    assert end_offset(services, dlq) == 1, "the too large one never reached the topic"
    assert "no dead letter for" in run.stderr


def test_dead_letters_left_pending_by_a_crash_are_sent_by_the_next_run(
    deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    """Before: a crash between the target commit and the flush lost them for good."""
    deployment = deploy()
    topic, dlq = deployment.config["topics"][0], deployment.config["dead_letter_topic"]
    customers = ChangeLog()
    produce(
        services,
        topic,
        [
            customers.insert({"id": 1, "name": "ok1", "email": None}),
            (b'{"id":2}', b"{not json"),
            customers.insert({"id": 3, "name": "far too long", "email": None}),
            customers.insert({"id": 4, "name": "ok4", "email": None}),
        ],
    )

    crashed = deployment.run("run", **{CRASH_ENV: "1"})
    assert crashed.process.returncode < 0, crashed.stderr[-3000:]
    rows = failure_rows(target_db)
    assert {o: r[0] for o, r in rows.items()} == {1: "pending", 2: "pending"}
    assert end_offset(services, dlq) == 0, "killed before any dead letter was sent"
    again = deployment.run("init")
    assert again.process.returncode == 0, again.stderr
    assert {o: r[0] for o, r in failure_rows(target_db).items()} == {1: "pending", 2: "pending"}

    rerun = deployment.run("run", "--until-idle", "2")
    assert rerun.process.returncode == 0, rerun.stderr[-3000:]
    assert {o: r[0] for o, r in failure_rows(target_db).items()} == {1: "sent", 2: "sent"}
    assert dead_letter_offsets(services, dlq, 2) == [1, 2]
    assert end_offset(services, dlq) == 2, "each sent once: the batch was not read again"
    assert "sending 2 pending dead letter(s) again" in rerun.stderr


def test_init_upgrades_an_old_failures_table_and_the_next_run_sends_its_rows(
    deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    """A failures table of an earlier version: nothing says whether its dead letters
    arrived, so `init` makes its rows pending and the service sends them."""
    deployment = deploy()
    topic, dlq = deployment.config["topics"][0], deployment.config["dead_letter_topic"]
    failures = target_db.table("failures")
    with target_db.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {failures} DROP COLUMN dead_letter"))
        conn.execute(sa.text(f"ALTER TABLE {failures} DROP COLUMN dead_letter_detail"))
        conn.execute(
            sa.text(
                f"INSERT INTO {failures} (topic, kafka_partition, kafka_offset, raw_key, "
                "raw_value, reason, detail) VALUES (:t, 0, 41, 'k', 'v', 'undecodable', 'old')"
            ),
            {"t": topic},
        )

    refused = deployment.run("run", "--until-idle", "1")
    assert refused.process.returncode == 2 and "cdc-recon init" in refused.stderr, refused.stderr
    for _ in range(2):  # idempotent
        upgrade = deployment.run("init")
        assert upgrade.process.returncode == 0, upgrade.stderr
    assert failure_rows(target_db) == {41: ("pending", None, b"v")}

    run = deployment.run("run", "--until-idle", "2")
    assert run.process.returncode == 0, run.stderr[-3000:]
    assert failure_rows(target_db)[41][0] == "sent"
    [letter] = read_all(services, dlq, 1)
    assert (letter.key(), letter.value()) == (b"k", b"v")
    assert dict(letter.headers())["cdc_recon.offset"] == b"41"


def test_when_the_dead_letter_topic_limit_drops_mid_run_only_the_large_one_is_refused(
    deploy: Callable[..., Deployment],
    services: Services,
    target_db: Database,
    kafka_admin: AdminClient,
) -> None:
    """The broker refuses a whole batch over the topic's limit: the small failure sent
    with the large one still arrives, the large one is settled, nothing waits forever."""
    deployment = deploy()
    topic, dlq = deployment.config["topics"][0], deployment.config["dead_letter_topic"]
    service = deployment.start("run")
    wait_until(lambda: "assigned" in service.stderr, "partitions assigned", lambda: service.stderr)
    set_topic_limit(kafka_admin, dlq, 100_000)  # below what the producer was sized to
    large = b"{" + b"z" * 300_000
    produce(services, topic, [(b'{"id":1}', large), (b'{"id":2}', b"{not json")])

    states = lambda: {o: r[0] for o, r in failure_rows(target_db).items()}  # noqa: E731
    wait_until(
        lambda: states() == {0: "too_large", 1: "sent"},
        "the large failure too_large and the small one sent",
        lambda: (states(), service.stderr[-2000:]),
    )
    service.process.send_signal(signal.SIGTERM)
    assert service.wait(60) == 0, service.stderr[-3000:]
    state, detail, raw = failure_rows(target_db)[0]
    assert raw == large and detail is not None and "too large" in detail, detail
    assert dead_letter_offsets(services, dlq, 1) == [1]
    assert end_offset(services, dlq) == 1
