"""The group consumer on the real broker: a partial batch is not held back, and a topic
created after the subscription is read."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from cdc_recon.batch import Message
from cdc_recon.config import load_settings
from cdc_recon.kafka.consumer import GroupConsumer
from tests.conftest import Services, unique_name, wait_for
from tests.integration.events import send

pytestmark = pytest.mark.integration

# A poll timeout the test's own timeout (below) cannot wait out: a batch returned at all
# was returned because the stream went quiet, not because the timeout passed.
LONG = 60.0


def group_consumer(services: Services, topics: list[str]) -> GroupConsumer:
    settings = load_settings(
        kafka_bootstrap=services.kafka_bootstrap,
        target_url=services.target_url,
        topics=topics,
        group_id=unique_name("consumer"),
        tables=[{"source": "public.t", "target": "public.t", "key": ["id"]}],
    )
    consumer = GroupConsumer(settings)
    consumer.subscribe(topics)
    return consumer


@pytest.fixture
def consumer(
    services: Services, topic_factory: Callable[..., str]
) -> Iterator[tuple[GroupConsumer, str]]:
    topic = topic_factory("linger", partitions=2)
    consumer = group_consumer(services, [topic])
    try:
        joined(consumer)
        yield consumer, topic
    finally:
        consumer.close()


def joined(consumer: GroupConsumer) -> None:
    """Until the group assigned the partitions (empty reads meanwhile)."""
    for _ in range(600):
        if consumer.assignment():
            return
        assert consumer.consume_batch(100, 0.05) == []
    raise AssertionError("the consumer was not assigned its partitions within 30 s")


@pytest.mark.timeout(30)
def test_a_partial_batch_returns_once_the_stream_is_quiet(
    services: Services, consumer: tuple[GroupConsumer, str]
) -> None:
    group, topic = consumer
    sent = send(
        services.kafka_bootstrap, topic, [(b"k%d" % i, b"v%d" % i, i % 2) for i in range(7)]
    )
    assert sent == 7
    read: list[bytes | None] = []
    while len(read) < 7:  # one batch per fetch that arrived: the partitions may come apart
        batch = group.consume_batch(10_000, LONG, linger=0.05)
        assert batch, "an empty batch: the poll timeout was waited out"
        read += [m.value for m in batch]
    assert sorted(read) == sorted(b"v%d" % i for i in range(7))  # type: ignore[type-var]
    assert group.consume_batch(10_000, 0.2, linger=0.05) == []


@pytest.mark.timeout(30)
def test_without_linger_a_full_batch_returns_at_once(
    services: Services, consumer: tuple[GroupConsumer, str]
) -> None:
    group, topic = consumer
    send(services.kafka_bootstrap, topic, [(b"k%d" % i, b"v%d" % i, 0) for i in range(5)])
    batch: list[bytes | None] = []
    while len(batch) < 5:  # a full batch of what is there; each read waits for it
        batch += [m.value for m in group.consume_batch(5 - len(batch), LONG)]
    assert sorted(batch) == [b"v%d" % i for i in range(5)]  # type: ignore[type-var]


@pytest.mark.timeout(90)
def test_a_topic_created_after_subscribing_is_read(
    services: Services, topic_factory: Callable[..., str], kafka_admin: AdminClient
) -> None:
    """librdkafka looks for a missing subscribed topic at each metadata refresh, every
    5 min by default: the wait below fails unless the consumer's refresh is shorter."""
    early, later = topic_factory("early"), unique_name("cdcr.later")
    group = group_consumer(services, [early, later])
    try:
        joined(group)
        kafka_admin.create_topics([NewTopic(later, num_partitions=1)])[later].result(timeout=30)
        send(services.kafka_bootstrap, later, [(b"k", b"created later", 0)])
        read: list[Message] = []
        wait_for(
            lambda: read.extend(group.consume_batch(10, 0.2, linger=0.05)) or read,
            f"a message of {later}, created after the subscription",
            timeout=60,
        )
        assert [(m.topic, m.value) for m in read] == [(later, b"created later")]
    finally:
        group.close()
        kafka_admin.delete_topics([later])[later].result(timeout=30)
