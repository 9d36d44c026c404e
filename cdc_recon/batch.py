"""What passes from the Kafka loop to the applier and back: messages, events, failures.

The service loop turns each polled message into a `Decoded` (an event, or a tombstone
to skip) or a `Failure` (it could not be decoded); the applier maps and writes the
events, records every failure in the target's `failures` table in the same transaction,
and reports back what happened in an `ApplyResult`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from cdc_recon.events import ChangeEvent

TopicPartitionKey = tuple[str, int]


class Message(msgspec.Struct, frozen=True, gc=False):
    """A Kafka message's coordinates and raw bytes, kept for the ledger and quarantine."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


class Decoded(msgspec.Struct, frozen=True, gc=False):
    """A message and its decoded event; `event` is None for a tombstone that is skipped."""

    message: Message
    event: ChangeEvent | None


class FailureReason:
    """Why a message was quarantined (the `reason` column and metric label)."""

    UNDECODABLE = "undecodable"
    UNMAPPED = "unmapped"
    REJECTED = "rejected"  # the target database refused the row


class Failure(msgspec.Struct, frozen=True, gc=False):
    """A message that could not be applied: quarantined, never dropped (promise P5)."""

    message: Message
    reason: str
    detail: str
    table: str | None = None


@dataclass(slots=True)
class ApplyResult:
    """What one applied batch did. `failures` are already in the `failures` table."""

    applied: int = 0  # changes that moved a row (or deleted it)
    superseded: int = 0  # changes older than what the key already holds
    duplicates: int = 0  # changes already in the ledger (redelivery, replay)
    skipped: int = 0  # tombstones and other messages with nothing to apply
    failures: list[Failure] = field(default_factory=list)
    applied_by_table: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, op)
    next_offsets: Mapping[TopicPartitionKey, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.applied + self.superseded + self.duplicates + self.skipped + len(self.failures)
