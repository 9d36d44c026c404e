"""Progress of the consumer-group service: offsets, lag, retry delays and run counts.

Pure functions and a counter, unit-tested without Kafka or a database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from cdc_recon.batch import ApplyResult, Message
from cdc_recon.batch import TopicPartitionKey as TPKey
from cdc_recon.kafka.consumer import Watermarks


def backoff(initial: float, maximum: float) -> Iterator[float]:
    """Delays between retries: `initial`, doubled each time, capped at `maximum`."""
    delay = min(initial, maximum)
    while True:
        yield delay
        delay = min(delay * 2, maximum)


class BatchLimit:
    """How many messages to ask Kafka for: `batch_size`, fewer when messages are big, so
    that a batch holds about `batch_bytes` of keys and values at most (a batch is held
    in memory two or three times over while it is decoded, queued and applied).

    The message size is a running average of what was consumed; before any, `guess`.

    >>> limit = BatchLimit(10_000, 32 << 20)
    >>> limit.observe([20_000] * 100)  # 20 kB rows (sizes of keys and values)
    >>> limit.next()
    1677
    """

    def __init__(self, batch_size: int, batch_bytes: int, guess: float = 4096.0) -> None:
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.average = guess
        self._seen = False

    def next(self) -> int:
        return max(1, min(self.batch_size, int(self.batch_bytes / self.average)))

    def observe(self, sizes: Sequence[int]) -> None:
        if not sizes:
            return
        size = max(sum(sizes) / len(sizes), 1.0)
        self.average = size if not self._seen else (self.average + size) / 2
        self._seen = True


def message_sizes(batch: Sequence[Message]) -> list[int]:
    """Bytes of each message's key and value."""
    return [len(m.key or b"") + len(m.value or b"") for m in batch]


def next_offsets(batch: Sequence[Message]) -> dict[TPKey, int]:
    """Per partition, the offset after the last message of `batch`."""
    found: dict[TPKey, int] = {}
    for message in batch:
        key = (message.topic, message.partition)
        found[key] = max(found.get(key, 0), message.offset + 1)
    return found


def partition_lag(position: int | None, marks: Watermarks) -> int:
    """Messages left to read; an unknown position means reading from the low watermark."""
    start = marks.low if position is None else max(position, marks.low)
    return max(marks.high - start, 0)


def caught_up(positions: Mapping[TPKey, int | None], marks: Mapping[TPKey, Watermarks]) -> bool:
    """True when every partition in `positions` has nothing left to read."""
    return all(
        key in marks and partition_lag(pos, marks[key]) == 0 for key, pos in positions.items()
    )


def total_lag(positions: Mapping[TPKey, int | None], marks: Mapping[TPKey, Watermarks]) -> int:
    return sum(partition_lag(pos, marks[key]) for key, pos in positions.items() if key in marks)


@dataclass
class ServiceStats:
    """What a run did, summed over its batches."""

    batches: int = 0
    messages: int = 0
    applied: int = 0
    superseded: int = 0
    duplicates: int = 0
    skipped: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def failed(self) -> int:
        return sum(self.failures_by_reason.values())

    def add(self, result: ApplyResult, messages: int) -> None:
        self.batches += 1
        self.messages += messages
        self.applied += result.applied
        self.superseded += result.superseded
        self.duplicates += result.duplicates
        self.skipped += result.skipped
        for failure in result.failures:
            self.failures_by_reason[failure.reason] = (
                self.failures_by_reason.get(failure.reason, 0) + 1
            )

    def summary(self) -> str:
        return (
            f"{self.messages} messages: applied {self.applied}, superseded {self.superseded}, "
            f"duplicates {self.duplicates}, skipped {self.skipped}, failed {self.failed}"
        )

    def line(self, rate: float, lag: int | None) -> str:
        shown = "?" if lag is None else str(lag)
        return f"{self.summary()}; {rate:.0f} messages/s, lag {shown}"
