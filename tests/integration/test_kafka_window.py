"""`WindowReader` on the real Kafka: time windows over several partitions, and offsets."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from cdc_recon.config import load_settings
from cdc_recon.kafka.window import OffsetRange, WindowReader
from tests.conftest import Services

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _write(services: Services, topic: str, messages: list[tuple[int, int, bytes]]) -> None:
    """`(partition, timestamp_ms, value)` messages, acknowledged."""
    producer = Producer({"bootstrap.servers": services.kafka_bootstrap, "acks": "all"})
    for partition, ts, value in messages:
        producer.produce(topic, value=value, partition=partition, timestamp=ts)
    assert producer.flush(30) == 0


def test_a_window_over_partitions_with_and_without_messages_in_it(
    services: Services, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("window", partitions=4)
    minute = 60_000
    messages = [(0, _ms(T0) + i * minute, f"p0-{i}".encode()) for i in range(10)]
    messages += [(2, _ms(T0) + 3 * minute + i, f"p2-{i}".encode()) for i in range(3)]
    messages += [(3, _ms(T0) - minute, b"p3-before")]  # partition 1 stays empty
    _write(services, topic, messages)
    settings = load_settings(kafka_bootstrap=services.kafka_bootstrap)

    with WindowReader(settings) as reader:
        ranges = reader.window([topic], T0 + timedelta(minutes=2), T0 + timedelta(minutes=5))
        assert ranges == {
            (topic, 0): OffsetRange(2, 5),
            (topic, 1): OffsetRange(0, 0),
            (topic, 2): OffsetRange(0, 3),
            (topic, 3): OffsetRange(1, 1),
        }
        batches = list(reader.read(ranges, 2))
        assert all(len(batch) <= 2 for batch in batches)
        read = sorted((m.partition, m.offset, m.value) for batch in batches for m in batch)
        assert read == [
            (0, 2, b"p0-2"),
            (0, 3, b"p0-3"),
            (0, 4, b"p0-4"),
            (2, 0, b"p2-0"),
            (2, 1, b"p2-1"),
            (2, 2, b"p2-2"),
        ]
        after = reader.window([topic], T0 + timedelta(hours=1), T0 + timedelta(hours=2))
        assert all(r.size == 0 for r in after.values()) and list(reader.read(after, 10)) == []
        everything = reader.window([topic], T0 - timedelta(hours=1), T0 + timedelta(hours=1))
        assert sum(len(b) for b in reader.read(everything, 100)) == len(messages)


def test_read_offsets_reports_what_is_no_longer_retained(
    services: Services, topic_factory: Callable[..., str], kafka_admin: AdminClient
) -> None:
    topic = topic_factory("offsets", partitions=1)
    _write(services, topic, [(0, _ms(T0) + i, f"m{i}".encode()) for i in range(3000)])
    deleted = kafka_admin.delete_records([TopicPartition(topic, 0, 10)])
    for future in deleted.values():
        future.result(timeout=30)
    settings = load_settings(kafka_bootstrap=services.kafka_bootstrap)

    with WindowReader(settings) as reader:
        found = reader.read_offsets(topic, 0, [3, 9, 10, 11, 2500, 2999, 3000, 5000])
    assert {o: m.value for o, m in found.messages.items()} == {
        10: b"m10",
        11: b"m11",
        2500: b"m2500",
        2999: b"m2999",
    }
    assert found.not_retained == {3, 9} and found.not_written == {3000, 5000}
