"""What passes from the Kafka loop to the applier and back: messages, events, failures.

The service loop turns each polled message into a `Decoded` (an event, or a tombstone
to skip) or a `Failure` (it could not be decoded); the applier maps and writes the
events, records every failure in the target's `failures` table in the same transaction,
and reports back what happened in an `ApplyResult`.
"""

from __future__ import annotations

import re
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
    INVALID = "invalid"  # a value does not fit its column, or the key disagrees with the row
    REJECTED = "rejected"  # the target database refused the row


class Failure(msgspec.Struct, frozen=True, gc=False):
    """A message that could not be applied: quarantined, never dropped (promise P5).

    `detail` and `table` are made safe once, here, for every place they go (a text
    column, a Kafka header, a log line): control characters (a newline that would forge
    a log line, a NUL that no PostgreSQL text holds) and lone surrogates are written as
    escapes, and the detail is cut at `MAX_DETAIL` characters. The raw bytes in
    `message` are kept as they came.
    """

    message: Message
    reason: str
    detail: str
    table: str | None = None

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "detail", printable(self.detail, MAX_DETAIL))
        if self.table is not None:
            msgspec.structs.force_setattr(self, "table", printable(self.table, MAX_DETAIL))


MAX_DETAIL = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]|[\ud800-\udfff]")


def printable(text: str, limit: int | None = None) -> str:
    """`text` with control characters and lone surrogates as escapes (`\\n`, `\\x00`,
    `\\ud800`), cut at `limit` characters: safe to store, send and log on one line."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"… ({len(text)} characters)"
    if text.isprintable() and not _CONTROL.search(text):
        return text
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode()


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

    def add_outcome(self, table: str, op: str, outcome: str, count: int) -> None:
        """`count` ledger lines of `table` and `op` recorded as `outcome`."""
        if outcome == "applied":
            self.applied += count
            self.applied_by_table[table, op] = self.applied_by_table.get((table, op), 0) + count
        else:
            self.superseded += count

    def add(self, other: ApplyResult) -> None:
        """What a part of a batch wrote, counted once it is in."""
        self.applied += other.applied
        self.superseded += other.superseded
        self.duplicates += other.duplicates
        for label, count in other.applied_by_table.items():
            self.applied_by_table[label] = self.applied_by_table.get(label, 0) + count

    @property
    def total(self) -> int:
        return self.applied + self.superseded + self.duplicates + self.skipped + len(self.failures)
