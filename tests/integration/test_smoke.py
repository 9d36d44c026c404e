"""The stack's real services behave as the rest of the suite relies on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.conftest import Database, Services

pytestmark = pytest.mark.integration


def _consume(consumer: Consumer, count: int, deadline_s: float = 30.0) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + deadline_s
    while len(values) < count and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=count - len(values), timeout=0.5):
            assert msg.error() is None, msg.error()
            values.append(msg.value())
    return values


def _consumer(services: Services, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": services.kafka_bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )


def test_consumer_group_reads_and_committed_offsets_survive(
    services: Services, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("smoke", partitions=2)
    producer = Producer({"bootstrap.servers": services.kafka_bootstrap})
    sent = [f"m{i}".encode() for i in range(10)]
    for i, value in enumerate(sent):
        producer.produce(topic, key=str(i).encode(), value=value)
    assert producer.flush(30) == 0

    group = f"smoke-{uuid.uuid4().hex[:8]}"
    first = _consumer(services, group)
    first.subscribe([topic])
    got = _consume(first, 6)
    assert len(got) == 6
    first.commit(asynchronous=False)
    first.close()

    second = _consumer(services, group)
    second.subscribe([topic])
    rest = _consume(second, 4)
    second.close()
    assert sorted(got + rest) == sorted(sent), "a new consumer resumes at the committed offsets"

    probe = _consumer(services, group)
    committed = probe.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    probe.close()
    # Partitions the first consumer never read have no committed offset (negative).
    assert sum(max(tp.offset, 0) for tp in committed) == 6


@pytest.mark.parametrize("which", ["source_db", "target_db"])
def test_transaction_commits_and_rolls_back(which: str, request: pytest.FixtureRequest) -> None:
    db: Database = request.getfixturevalue(which)
    table = db.table("smoke")
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)"))
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 'kept')"))
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (2, 'rolled back')"))
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 'duplicate')"))
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id, v FROM {table}")).all()
        wal_level = conn.execute(sa.text("SHOW wal_level")).scalar_one()
    assert [tuple(r) for r in rows] == [(1, "kept")]
    assert wal_level == "logical"
