"""Reading the CDC topics by time window or by offset, outside the consumer group.

`WindowReader` is a standalone consumer: partitions are assigned by hand
(`incremental_assign`, and each is unassigned as soon as it reaches its end, so nothing
after the range is fetched), nothing is ever committed (`enable.auto.commit=false`, and
the random `group.id` librdkafka insists on never joins a group), so a replay cannot
move the service's offsets.

- `window(topics, start, end)`: per partition, `[first offset with timestamp >= start,
  first offset with timestamp >= end)` from `offsets_for_times`; where no message is at
  or after `end` the range ends at the high watermark read now, so messages written
  during the replay are not chased. Message timestamps are the producer's (CreateTime):
  a range is exact for a connector that writes in time order.
- `read(ranges, batch_size)`: the messages of the ranges in batches; a partition is done
  at its end offset or at its end of partition (gaps left by compaction or transaction
  markers never make it wait).
- `read_offsets(topic, partition, offsets)`: specific messages, and which offsets are
  no longer retained (below the low watermark, or compacted away).

    >>> with WindowReader(settings) as reader:                        # doctest: +SKIP
    ...     ranges = reader.window(settings.topics, start, end)
    ...     for batch in reader.read(ranges, 5000):
    ...         ...
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from cdc_recon.batch import Message, TopicPartitionKey
from cdc_recon.config import Settings
from cdc_recon.exceptions import KafkaUnavailable
from cdc_recon.kafka.admin import client_config, to_message, topic_partitions
from cdc_recon.kafka.consumer import Watermarks
from cdc_recon.timeparse import epoch_ms

STALL_TIMEOUT = 30.0  # seconds without a message or end of partition before giving up
NEARBY = 1000  # read through gaps up to this many offsets instead of seeking
_NOT_FOUND = -1  # offsets_for_times: no message at or after the timestamp
_NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Offsets `[start, end)` of one partition."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"not an offset range: [{self.start}, {self.end})")

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class OffsetsRead:
    """What `read_offsets` found: messages by offset, and the offsets Kafka no longer has."""

    messages: dict[int, Message] = field(default_factory=dict)
    not_retained: frozenset[int] = frozenset()
    not_written: frozenset[int] = frozenset()  # at or past the high watermark


def window_range(start: int, end: int, marks: Watermarks) -> OffsetRange:
    """A partition's range from `offsets_for_times` answers (-1: none at or after)."""
    first = marks.high if start == _NOT_FOUND else max(start, marks.low)
    last = marks.high if end == _NOT_FOUND else min(end, marks.high)
    return OffsetRange(first, max(first, last))


def runs(offsets: Iterable[int], nearby: int = NEARBY) -> list[list[int]]:
    """Sorted distinct offsets grouped so that each group is read in one pass."""
    groups: list[list[int]] = []
    for offset in sorted(set(offsets)):
        if groups and offset - groups[-1][-1] <= nearby:
            groups[-1].append(offset)
        else:
            groups.append([offset])
    return groups


class WindowReader:
    """A consumer that only assigns, never commits; see the module docstring."""

    def __init__(self, settings: Settings, *, stall_timeout: float = STALL_TIMEOUT) -> None:
        self._stall_timeout = stall_timeout
        config = {
            **client_config(settings.kafka_bootstrap, settings.kafka),
            "group.id": f"{settings.group_id}.replay.{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
        self._consumer = Consumer(config)
        self._closed = False

    # -- where the window is ---------------------------------------------------------

    def window(
        self, topics: Sequence[str], start: datetime, end: datetime, timeout: float = 10.0
    ) -> dict[TopicPartitionKey, OffsetRange]:
        """Each partition's offsets for messages timestamped in `[start, end)`."""
        keys = self.partitions(topics, timeout)
        marks = self.watermarks(keys, timeout)
        firsts = self._offsets_for_times(keys, epoch_ms(start), timeout)
        lasts = self._offsets_for_times(keys, epoch_ms(end), timeout)
        return {
            key: window_range(firsts[key], lasts[key], marks[key]) for key in keys if key in marks
        }

    def _offsets_for_times(
        self, keys: Sequence[TopicPartitionKey], at_ms: int, timeout: float
    ) -> dict[TopicPartitionKey, int]:
        if not keys:
            return {}
        tps = [TopicPartition(topic, part, at_ms) for topic, part in keys]
        try:
            found = self._consumer.offsets_for_times(tps, timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot look up offsets by time: {exc.args[0]}") from exc
        for tp in found:
            if tp.error is not None:
                raise KafkaUnavailable(
                    f"cannot look up offsets by time of {tp.topic}[{tp.partition}]: {tp.error}"
                )
        return {(tp.topic, tp.partition): tp.offset for tp in found}

    def partitions(self, topics: Sequence[str], timeout: float = 10.0) -> list[TopicPartitionKey]:
        """Every existing partition of `topics` (a topic that does not exist has none)."""
        return topic_partitions(self._consumer, topics, timeout)

    def watermarks(
        self, keys: Iterable[TopicPartitionKey], timeout: float = 10.0
    ) -> dict[TopicPartitionKey, Watermarks]:
        """Low and high watermark of each partition in `keys` that exists."""
        found: dict[TopicPartitionKey, Watermarks] = {}
        for key in keys:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(*key), timeout=timeout
                )
            except KafkaException as exc:
                raise KafkaUnavailable(f"cannot read watermarks of {key}: {exc.args[0]}") from exc
            if low != _NO_OFFSET and high != _NO_OFFSET:
                found[key] = Watermarks(low, high)
        return found

    # -- reading ---------------------------------------------------------------------

    def read(
        self, ranges: Mapping[TopicPartitionKey, OffsetRange], batch_size: int
    ) -> Iterator[list[Message]]:
        """The messages of `ranges`, in batches of at most `batch_size`."""
        pending = {key: r for key, r in ranges.items() if r.size > 0}
        if not pending:
            return
        self._assign({key: r.start for key, r in pending.items()})
        try:
            while pending:
                batch = self._poll(pending, batch_size)
                if batch:
                    yield batch
        finally:
            self._unassign(pending)

    def _poll(
        self, pending: dict[TopicPartitionKey, OffsetRange], batch_size: int
    ) -> list[Message]:
        """One consume call; drops partitions from `pending` as they reach their end."""
        batch: list[Message] = []
        for msg in self._consume(batch_size):
            key = (msg.topic(), msg.partition())
            wanted = pending.get(key)
            if wanted is None:
                continue
            error = msg.error()
            if error is None and msg.offset() < wanted.end:
                batch.append(to_message(msg))
            if error is not None or msg.offset() >= wanted.end - 1:  # the end, or past it
                del pending[key]
                self._unassign([key])
        return batch

    def read_offsets(self, topic: str, partition: int, offsets: Iterable[int]) -> OffsetsRead:
        """The messages at `offsets` of one partition, and the offsets that are gone."""
        wanted = set(offsets)
        marks = self.watermarks([(topic, partition)]).get((topic, partition))
        if marks is None:
            raise KafkaUnavailable(f"partition {topic}[{partition}] does not exist")
        expired = {o for o in wanted if o < marks.low}
        unwritten = {o for o in wanted if o >= marks.high}
        found: dict[int, Message] = {}
        for run in runs(wanted - expired - unwritten):
            found.update(self._read_run(topic, partition, run))
        compacted = wanted - expired - unwritten - found.keys()
        return OffsetsRead(found, frozenset(expired | compacted), frozenset(unwritten))

    def _read_run(self, topic: str, partition: int, run: list[int]) -> dict[int, Message]:
        key = (topic, partition)
        wanted = set(run)
        range_ = {key: OffsetRange(run[0], run[-1] + 1)}
        found: dict[int, Message] = {}
        for batch in self.read(range_, max(len(run), 500)):
            found.update((m.offset, m) for m in batch if m.offset in wanted)
        return found

    # -- the client ------------------------------------------------------------------

    def _consume(self, batch_size: int) -> list[Any]:
        deadline = time.monotonic() + self._stall_timeout
        while True:
            try:
                raw = self._consumer.consume(num_messages=batch_size, timeout=0.5)
            except KafkaException as exc:
                raise KafkaUnavailable(f"cannot read the window: {exc.args[0]}") from exc
            for msg in raw:
                _raise_for_error(msg)
            if raw:
                return list(raw)
            if time.monotonic() > deadline:
                raise KafkaUnavailable(
                    f"no message and no end of partition for {self._stall_timeout:g}s "
                    "while reading a window"
                )

    def _assign(self, starts: Mapping[TopicPartitionKey, int]) -> None:
        tps = [TopicPartition(t, p, o) for (t, p), o in sorted(starts.items())]
        try:
            self._consumer.incremental_assign(tps)
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot assign partitions: {exc.args[0]}") from exc

    def _unassign(self, keys: Iterable[TopicPartitionKey]) -> None:
        """Stop fetching `keys`: a finished partition's later messages are not read."""
        tps = [TopicPartition(*key) for key in keys]
        if not tps:
            return
        try:
            self._consumer.incremental_unassign(tps)
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot unassign partitions: {exc.args[0]}") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._consumer.close()

    def __enter__(self) -> WindowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _raise_for_error(msg: Any) -> None:
    error = msg.error()
    if error is None or error.code() == KafkaError._PARTITION_EOF:
        return
    where = f"{msg.topic()}[{msg.partition()}]" if msg.topic() else "consumer"
    raise KafkaUnavailable(f"Kafka error on {where} while reading a window: {error.str()}")
