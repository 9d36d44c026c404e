"""The group consumer's batching on the real broker: a partial batch is not held back."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from cdc_recon.config import load_settings
from cdc_recon.kafka.consumer import GroupConsumer
from tests.conftest import Services
from tests.integration.events import send

pytestmark = pytest.mark.integration

# A poll timeout the test's own timeout (below) cannot wait out: a batch returned at all
# was returned because the stream went quiet, not because the timeout passed.
LONG = 60.0


@pytest.fixture
def consumer(
    services: Services, topic_factory: Callable[..., str]
) -> Iterator[tuple[GroupConsumer, str]]:
    topic = topic_factory("linger", partitions=2)
    settings = load_settings(
        kafka_bootstrap=services.kafka_bootstrap,
        target_url=services.target_url,
        topics=[topic],
        group_id=f"linger-{topic}",
        tables=[{"source": "public.t", "target": "public.t", "key": ["id"]}],
    )
    consumer = GroupConsumer(settings)
    consumer.subscribe([topic])
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
    batch = group.consume_batch(10_000, LONG, linger=0.05)
    assert sent == 7
    assert sorted(m.value for m in batch if m.value) == sorted(b"v%d" % i for i in range(7))
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
