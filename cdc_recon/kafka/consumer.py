"""The service's consumer-group client: a thin wrapper around `confluent_kafka.Consumer`.

Offsets are ours, not librdkafka's: auto-commit and the automatic offset store are off,
`commit()` is called by the service only after the target transaction that stored the
same offsets committed (promise P4). It is asynchronous: Kafka's committed offsets are a
copy for lag tools (a partition resumes from the offset stored in the target), and
librdkafka holds a synchronous commit while the group has no coordinator, which stalled
the consume loop for good after a broker restart on a busy host (issue 16). A refused
commit comes back through `on_commit` at a later poll; `failed_commits()` hands the
service those still worth sending again (`CommitFailures`). On assignment the wrapper asks a
callback for the offsets stored in the target and starts each partition there; a
partition with none starts at the group's committed offset, else `auto.offset.reset`.

Assignment strategy: `cooperative-sticky`. A rebalance then revokes only the partitions
that change owner, so the other instances keep applying instead of stopping the world
and re-reading every partition's stored offset, and sticky ownership keeps one key's
rows written by the same instance across rebalances. `range`/`roundrobin` set through
`settings.kafka` still work (eager assign/unassign).

The service is single-threaded: librdkafka runs the rebalance callbacks inside
`consume_batch()` or `close()`, never while a batch is being applied, so a revocation
always sees the previous batch finished. Messages of revoked partitions that librdkafka
already fetched are dropped, not applied: their new owner reads them from the stored offset.

    >>> consumer = GroupConsumer(settings)                                   # doctest: +SKIP
    >>> consumer.subscribe(settings.topics, stored_offsets=lookup)           # doctest: +SKIP
    >>> batch = consumer.consume_batch(5000, 0.5)                            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from cdc_recon.batch import Message, TopicPartitionKey
from cdc_recon.config import Settings
from cdc_recon.exceptions import ConfigError, KafkaUnavailable
from cdc_recon.kafka.admin import client_config, to_message, topic_partitions

LOG = logging.getLogger("cdc_recon.consumer")

StoredOffsets = Callable[[Sequence[TopicPartitionKey]], Mapping[TopicPartitionKey, int]]
BeforeRevoke = Callable[[Sequence[TopicPartitionKey]], None]

COOPERATIVE = "cooperative-sticky"
# Settings that would break "offsets after success" if a user overrode them.
_OWNED = {"enable.auto.commit": False, "enable.auto.offset.store": False}
# librdkafka prefetches up to 64 MB and, once full, waits 1 s before fetching again;
# 16 MB refetched after 10 ms keeps a batch or two ready at a quarter of the memory
# (bench/apply.py, batches of 10,000: 224 MB instead of 287 MB, as fast).
PREFETCH = {"queued.max.messages.kbytes": 16384, "fetch.queue.backoff.ms": 10}
# A subscribed topic that does not exist yet (Debezium creates a table's topic with its
# first change) is looked for again at each metadata refresh: every 5 min by default,
# every 5 s here.
METADATA_REFRESH = {"topic.metadata.refresh.interval.ms": 5000}
_IGNORED = {KafkaError._PARTITION_EOF}
_NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID


@dataclass(frozen=True, slots=True)
class Watermarks:
    """A partition's first and next-to-be-written offsets."""

    low: int
    high: int


def consumer_config(settings: Settings, error_cb: Callable[[KafkaError], None]) -> dict[str, Any]:
    """librdkafka settings of the service's consumer; `settings.kafka` may not undo ours."""
    for name, value in _OWNED.items():
        given = settings.kafka.get(name)
        if given is not None and str(given).lower() != str(value).lower():
            raise ConfigError(
                f"config: kafka.{name}: cdc_recon commits offsets itself after the "
                "database commit; remove this setting",
                key=f"kafka.{name}",
            )
    return {
        **client_config(settings.kafka_bootstrap),
        "group.id": settings.group_id,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": COOPERATIVE,
        **PREFETCH,
        **METADATA_REFRESH,
        "error_cb": error_cb,
        **settings.kafka,
        **_OWNED,
    }


def tp_key(tp: TopicPartition) -> TopicPartitionKey:
    return (tp.topic, tp.partition)


class CommitFailures:
    """The asynchronous commits Kafka refused, for sending again (pure bookkeeping).

    Only the newest offset sent for a partition is worth sending again: a refusal of an
    older one may come back after a newer one was sent, and committing it again would
    move the group's offset back."""

    def __init__(self) -> None:
        self._sent: dict[TopicPartitionKey, int] = {}
        self._failed: dict[TopicPartitionKey, int] = {}
        self.reason: str | None = None

    def sent(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        self._sent.update(offsets)
        for key in offsets:
            self._failed.pop(key, None)

    def on_commit(self, error: Any, partitions: Sequence[Any]) -> None:
        """librdkafka's `on_commit(err, partitions)`: a request-wide error, or one per
        partition (`tp.error`)."""
        for tp in partitions:
            refused = error if error is not None else tp.error
            key = tp_key(tp)
            if refused is not None and self._sent.get(key) == tp.offset:
                self._failed[key] = tp.offset
                self.reason = str(refused)

    def take(self) -> dict[TopicPartitionKey, int]:
        """The refused newest offsets, forgotten here (the caller sends them again)."""
        failed, self._failed = self._failed, {}
        return failed


class GroupConsumer:
    """One member of the service's consumer group; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        config = consumer_config(settings, self._on_error)
        self._cooperative = config["partition.assignment.strategy"] == COOPERATIVE
        self._stored_offsets: StoredOffsets | None = None
        self._before_revoke: BeforeRevoke | None = None
        self._assigned: set[TopicPartitionKey] = set()
        self._next: dict[TopicPartitionKey, int] = {}
        self._forgotten = 0  # partition revocations and losses so far
        self._fatal: KafkaError | None = None
        self._warned_topics: set[str] = set()
        self._closed = False
        self.joined = False  # a rebalance completed at least once (maybe with no partitions)
        self._commits = CommitFailures()
        config["on_commit"] = self._commits.on_commit
        self._consumer = Consumer(config)

    # -- group membership ------------------------------------------------------------

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        stored_offsets: StoredOffsets | None = None,
        before_revoke: BeforeRevoke | None = None,
    ) -> None:
        """Join the group for `topics`.

        `stored_offsets(partitions)` answers, on assignment, where each partition resumes
        (absent: the group's committed offset, else `auto.offset.reset`);
        `before_revoke(partitions)` runs before partitions go, to commit what is pending.
        """
        self._stored_offsets = stored_offsets
        self._before_revoke = before_revoke
        try:
            self._consumer.subscribe(
                list(topics),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot subscribe to {list(topics)}: {exc.args[0]}") from exc

    def assignment(self) -> list[TopicPartitionKey]:
        return sorted(self._assigned)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [tp_key(tp) for tp in partitions]
        stored = self._stored_offsets(keys) if keys and self._stored_offsets else {}
        for tp in partitions:
            offset = stored.get(tp_key(tp))
            if offset is not None:
                tp.offset = offset
                self._next[tp_key(tp)] = offset
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self._assigned.update(keys)
        self.joined = True
        if keys:
            LOG.info("assigned %s (stored offsets %s)", _names(keys), _offsets(stored))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [tp_key(tp) for tp in partitions]
        try:
            if keys and self._before_revoke is not None:
                self._before_revoke(keys)
        finally:
            self._forget(consumer, partitions)
            if keys:
                LOG.info("revoked %s", _names(keys))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(consumer, partitions)
        LOG.warning("lost %s (another member may own them now)", _names(map(tp_key, partitions)))

    def _forget(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        for tp in partitions:
            self._assigned.discard(tp_key(tp))
            self._next.pop(tp_key(tp), None)
        self._forgotten += 1

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error
        LOG.warning("kafka: %s", error.str())

    # -- reading -----------------------------------------------------------------------

    def consume_batch(
        self, max_messages: int, timeout: float, linger: float | None = None
    ) -> list[Message]:
        """Up to `max_messages` messages of the currently assigned partitions.

        Waits up to `timeout` for them. With `linger`, a partial batch is returned once
        no more messages arrived for `linger` seconds: librdkafka's consume waits for a
        full batch, which held the last messages of a burst (and every message of a
        quiet stream) back by up to `timeout`.

        Raises `KafkaUnavailable` for a fatal client error or a message-level error
        (authorisation, corrupt record...); partition EOF is ignored, and a subscribed
        topic that does not exist yet is logged once.
        """
        if self._fatal is not None:
            raise KafkaUnavailable(f"fatal Kafka client error: {self._fatal.str()}")
        batch: list[Message] = []
        if linger is None or linger >= timeout:
            self._read(batch, max_messages, timeout)
            return batch
        deadline = time.monotonic() + timeout
        forgotten = self._forgotten
        while True:
            wanted = max_messages - len(batch)
            left = deadline - time.monotonic()
            read = self._read(batch, wanted, max(min(linger, left), 0.0))
            if len(batch) >= max_messages or left <= linger or (batch and read < wanted):
                break
        if self._forgotten != forgotten:  # a rebalance between two reads: drop what it took
            batch = [m for m in batch if (m.topic, m.partition) in self._assigned]
        return batch

    def _read(self, batch: list[Message], max_messages: int, timeout: float) -> int:
        """Appends up to `max_messages` messages to `batch`; how many librdkafka gave."""
        try:
            raw = self._consumer.consume(num_messages=max_messages, timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot consume: {exc.args[0]}") from exc
        assigned, positions = self._assigned, self._next
        for msg in raw:
            error = msg.error()
            if error is not None:
                self._check(msg, error)
                continue
            message = to_message(msg)
            where = (message.topic, message.partition)
            if where in assigned:
                batch.append(message)
                positions[where] = message.offset + 1
        return len(raw)

    def _check(self, msg: Any, error: KafkaError) -> None:
        """Skip partition EOF and a topic not created yet; raise for any other error."""
        if error.code() in _IGNORED:
            return
        if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and msg.topic():
            if msg.topic() not in self._warned_topics:
                self._warned_topics.add(msg.topic())
                LOG.warning("topic %s does not exist (yet): %s", msg.topic(), error.str())
            return
        where = f"{msg.topic()}[{msg.partition()}]" if msg.topic() else "consumer"
        raise KafkaUnavailable(f"Kafka error on {where}: {error.str()}")

    def positions(self) -> dict[TopicPartitionKey, int | None]:
        """Next offset to read per assigned partition; None while it is not known yet."""
        found: dict[TopicPartitionKey, int | None] = {}
        unknown = [TopicPartition(*key) for key in self._assigned if key not in self._next]
        for tp in self._consumer.position(unknown) if unknown else []:
            found[tp_key(tp)] = tp.offset if tp.offset >= 0 else None
        return {key: self._next.get(key, found.get(key)) for key in sorted(self._assigned)}

    # -- offsets -----------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Send each partition's next offset to Kafka, without waiting (see the module
        docstring); `KafkaUnavailable` when the request cannot even be queued."""
        if not offsets:
            return
        tps = [TopicPartition(topic, part, offset) for (topic, part), offset in offsets.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=True)
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot commit offsets: {exc.args[0]}") from exc
        self._commits.sent(offsets)

    def failed_commits(self) -> tuple[dict[TopicPartitionKey, int], str | None]:
        """Commits Kafka refused since the last call (newest offsets only), and why."""
        return self._commits.take(), self._commits.reason

    def committed(
        self, partitions: Iterable[TopicPartitionKey], timeout: float = 10.0
    ) -> dict[TopicPartitionKey, int | None]:
        """The group's committed offset per partition (None when it has none)."""
        tps = [TopicPartition(*key) for key in partitions]
        if not tps:
            return {}
        try:
            result = self._consumer.committed(tps, timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot read committed offsets: {exc.args[0]}") from exc
        return {tp_key(tp): (tp.offset if tp.offset >= 0 else None) for tp in result}

    def watermarks(
        self,
        partitions: Iterable[TopicPartitionKey],
        *,
        cached: bool = False,
        timeout: float = 10.0,
    ) -> dict[TopicPartitionKey, Watermarks]:
        """Low and high watermarks; `cached=True` answers from the last fetch, no round trip.

        Cached answers leave out partitions whose watermarks are not known yet.
        """
        found: dict[TopicPartitionKey, Watermarks] = {}
        for key in partitions:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(*key), timeout=timeout, cached=cached
                )
            except KafkaException as exc:
                raise KafkaUnavailable(f"cannot read end offsets of {key}: {exc.args[0]}") from exc
            if low != _NO_OFFSET and high != _NO_OFFSET:
                found[key] = Watermarks(low, high)
        return found

    def end_offsets(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Each partition's high watermark: the offset the next written message will get."""
        return {key: marks.high for key, marks in self.watermarks(partitions).items()}

    def partitions(self, topics: Sequence[str], timeout: float = 10.0) -> list[TopicPartitionKey]:
        """Every partition of `topics` that exists, from the cluster's metadata."""
        return topic_partitions(self._consumer, topics, timeout)

    def close(self) -> None:
        """Leave the group: revocation callbacks run (and commit), then the client closes."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close()
        except KafkaException as exc:
            raise KafkaUnavailable(f"error while leaving the group: {exc.args[0]}") from exc

    def __enter__(self) -> GroupConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _names(keys: Iterable[TopicPartitionKey]) -> str:
    return ", ".join(f"{topic}[{part}]" for topic, part in sorted(keys)) or "nothing"


def _offsets(offsets: Mapping[TopicPartitionKey, int]) -> str:
    return ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(offsets.items())) or "none"


def schema_registry_client(url: str) -> Any:
    """A Confluent schema registry client for `AvroDecoder` (fetches writer schemas by id)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": url})
