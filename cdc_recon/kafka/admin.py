"""Cluster checks and topic administration (metadata, configs, topic creation)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # not re-exported for mypy
from confluent_kafka.cimpl import NewTopic

from cdc_recon.batch import Message
from cdc_recon.exceptions import KafkaUnavailable


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str | None
    brokers: int
    topics: int


LOG = logging.getLogger("cdc_recon.kafka")


def client_config(bootstrap: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """librdkafka settings for any client; its own log lines go to `cdc_recon.kafka`."""
    return {"bootstrap.servers": bootstrap, "logger": LOG, **(extra or {})}


def to_message(msg: Any) -> Message:
    """A confluent-kafka message as our `Message` (coordinates and raw bytes)."""
    return Message(
        msg.topic(),
        msg.partition(),
        msg.offset(),
        msg.key(),
        msg.value(),
        max(msg.timestamp()[1], 0),
    )


def topic_partitions(
    client: Any, topics: Sequence[str], timeout: float = 10.0
) -> list[tuple[str, int]]:
    """Every existing partition of `topics` from `client`'s metadata (a missing topic has none)."""
    found: list[tuple[str, int]] = []
    for topic in topics:
        try:
            metadata = client.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot read metadata of {topic}: {exc.args[0]}") from exc
        described = metadata.topics.get(topic)
        if described is not None and described.error is None:
            found.extend((topic, part) for part in sorted(described.partitions))
    return found


def describe_cluster(bootstrap: str, *, timeout: float = 10.0) -> ClusterInfo:
    """One metadata request; `KafkaUnavailable` when the cluster does not answer."""
    admin = AdminClient(client_config(bootstrap))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap}: {exc.args[0]}") from exc
    return ClusterInfo(metadata.cluster_id, len(metadata.brokers), len(metadata.topics))


MAX_MESSAGE_BYTES = "max.message.bytes"  # a topic's limit on one record batch
BROKER_MESSAGE_BYTES = "message.max.bytes"  # the broker's default for topics without one


def max_message_bytes(
    bootstrap: str,
    topics: Sequence[str],
    extra: dict[str, str] | None = None,
    *,
    timeout: float = 10.0,
) -> dict[str, int | None]:
    """Each topic's effective `max.message.bytes` (its own or the broker's default);
    None for a topic that does not exist (yet). `KafkaUnavailable` on any other error.

    >>> max_message_bytes("127.0.0.1:9092", ["orders"])  # doctest: +SKIP
    {'orders': 1048588}
    """
    found = topic_configs(bootstrap, topics, [MAX_MESSAGE_BYTES], extra, timeout=timeout)
    return {
        topic: None if configs is None else int(configs[MAX_MESSAGE_BYTES])
        for topic, configs in found.items()
    }


def topic_configs(
    bootstrap: str,
    topics: Sequence[str],
    names: Sequence[str],
    extra: dict[str, str] | None = None,
    *,
    timeout: float = 10.0,
) -> dict[str, dict[str, str] | None]:
    """The effective values of the configs `names` of each topic (its own or the
    broker's default); None for a topic that does not exist. `KafkaUnavailable` on any
    other error. The retention reads `retention.ms` this way.

    >>> topic_configs("127.0.0.1:9092", ["orders"], ["retention.ms"])  # doctest: +SKIP
    {'orders': {'retention.ms': '604800000'}}
    """
    admin = AdminClient(client_config(bootstrap, extra))
    found: dict[str, dict[str, str] | None] = {}
    for topic in topics:
        resource = ConfigResource("topic", topic)
        try:
            entries = admin.describe_configs([resource])[resource].result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                found[topic] = None
                continue
            raise KafkaUnavailable(f"cannot read the config of topic {topic}: {error}") from exc
        found[topic] = {
            name: str(entries[name].value) for name in names if entries.get(name) is not None
        }
    return found


def broker_max_message_bytes(
    bootstrap: str, extra: dict[str, str] | None = None, *, timeout: float = 10.0
) -> int:
    """The `message.max.bytes` of one broker: what a topic created without a limit gets."""
    admin = AdminClient(client_config(bootstrap, extra))
    try:
        brokers = admin.list_topics(timeout=timeout).brokers
        resource = ConfigResource("broker", str(min(brokers)))
        entries = admin.describe_configs([resource])[resource].result(timeout=timeout)
    except (KafkaException, ValueError) as exc:
        raise KafkaUnavailable(f"cannot read the broker config at {bootstrap}: {exc}") from exc
    return int(entries[BROKER_MESSAGE_BYTES].value)


def ensure_topic(
    bootstrap: str,
    topic: str,
    *,
    max_bytes: int,
    extra: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bool]:
    """Create `topic` with `max.message.bytes` = `max_bytes` (partitions and replication
    from the broker's defaults) unless it exists; returns its limit and whether it was
    created. An existing topic keeps its own limit: operators own it.
    """
    existing = max_message_bytes(bootstrap, [topic], extra, timeout=timeout)[topic]
    if existing is not None:
        return existing, False
    admin = AdminClient(client_config(bootstrap, extra))
    new = NewTopic(topic, config={MAX_MESSAGE_BYTES: str(max_bytes)})
    try:
        admin.create_topics([new])[topic].result(timeout=timeout)
    except KafkaException as exc:
        error = exc.args[0]
        if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            # Another instance created it meanwhile: its limit is the one that counts.
            found = max_message_bytes(bootstrap, [topic], extra, timeout=timeout)[topic]
            return (found if found is not None else max_bytes), False
        raise KafkaUnavailable(f"cannot create topic {topic}: {error}") from exc
    return max_bytes, True


def round_trip(bootstrap: str, *, timeout: float = 30.0) -> float:
    """Write one message to a scratch topic, read it back with a consumer group.

    Returns the seconds it took; the scratch topic is deleted afterwards.
    """
    topic = f"cdc-recon.roundtrip.{uuid.uuid4().hex[:10]}"
    admin = AdminClient(client_config(bootstrap))
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=timeout)
    started = time.monotonic()
    try:
        payload = uuid.uuid4().bytes
        producer = Producer(client_config(bootstrap))
        producer.produce(topic, value=payload)
        if producer.flush(timeout) != 0:
            raise KafkaUnavailable(f"Kafka at {bootstrap} did not acknowledge a write")
        consumer = Consumer(
            {
                **client_config(bootstrap),
                "group.id": topic,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None and msg.value() == payload:
                    consumer.commit(message=msg, asynchronous=False)
                    return time.monotonic() - started
        finally:
            consumer.close()
        raise KafkaUnavailable(f"the message written to {topic} was not read back in {timeout}s")
    finally:
        admin.delete_topics([topic])[topic].result(timeout=timeout)
