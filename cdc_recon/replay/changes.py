"""Pure parts of replay: its values, re-read rows as events, and change matching.

Nothing here talks to Kafka or a database.

Re-read rows become snapshot-like events: op `r` (a row that exists) or `d` (a key
without a row), the read's WAL LSN as position and the re-reading transaction's xid as
`tx`, so the ledger records a re-read under its own change id. Each carries a synthetic
message: topic `source-db:<table>` (no Kafka topic can be named so), the row's index in
its read as partition and the read's LSN as offset, the key_text as key and the row as
JSON as value. That is unique per re-read row, so a row the target rejects gets its own
`failures` entry.

    >>> events = reread_events(read, mapping)          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson

from cdc_recon.batch import ApplyResult, Decoded, Message
from cdc_recon.config import TableMapping
from cdc_recon.events import ChangeEvent, Op, SourcePosition, event_change_id
from cdc_recon.source_db.rows import SourceRead, key_object

SOURCE_TOPIC_PREFIX = "source-db:"
T = TypeVar("T")


@dataclass(frozen=True)
class MissedChange:
    """A source change the sweeper found missing; Kafka coordinates when it knows them."""

    change_id: str
    source_table: str
    key_text: str
    tx: str
    position: tuple[int, ...] | None
    changed_at: datetime
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    @property
    def coordinates(self) -> tuple[str, int, int] | None:
        if self.topic is None or self.partition is None or self.offset is None:
            return None
        return (self.topic, self.partition, self.offset)


@dataclass(frozen=True)
class ReplayOutcome:
    """What replaying one missed change did, for the sweeper's record."""

    status: str  # "replayed" | "failed" | "pending"
    detail: str = ""


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay did (or, in a dry run, would do), summed over its batches."""

    read: int = 0  # messages read from Kafka, or rows and deleted keys re-read
    applied: int = 0
    superseded: int = 0  # older than what the key already holds
    duplicates: int = 0  # already in the ledger
    skipped: int = 0  # tombstones, and events of tables not asked for
    failed: int = 0  # quarantined, or (source re-reads) left unresolved
    dry_run: bool = False

    def plus(
        self, result: ApplyResult, *, read: int = 0, skipped: int = 0, failed: int = 0
    ) -> ReplaySummary:
        """This summary with one batch's result, `read` and extra skipped or failed added."""
        return dataclasses.replace(
            self,
            read=self.read + read,
            applied=self.applied + result.applied,
            superseded=self.superseded + result.superseded,
            duplicates=self.duplicates + result.duplicates,
            skipped=self.skipped + result.skipped + skipped,
            failed=self.failed + len(result.failures) + failed,
        )

    def as_dict(self) -> dict[str, int | bool]:
        return dataclasses.asdict(self)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def normal_key_text(key_text: str) -> str:
    """A key_text re-encoded compactly, as PostgreSQL's `array_to_json` writes it."""
    try:
        return orjson.dumps(orjson.loads(key_text)).decode()
    except orjson.JSONDecodeError:
        raise ValueError(f"key {key_text!r} is not JSON") from None


def source_topic(table: str) -> str:
    return f"{SOURCE_TOPIC_PREFIX}{table}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, memoryview | bytes | bytearray):
        return bytes(value).hex()
    return str(value)


def reread_events(read: SourceRead, mapping: TableMapping) -> dict[str, Decoded]:
    """One event per re-read key (`r` for a row, `d` for an absent key), by key_text."""
    position = SourcePosition(read.position_parts)
    topic = source_topic(read.table)
    tx, family = read.transaction, read.connector
    offset = read.position_parts[1] if read.position else read.lsn  # unique per read
    events: dict[str, Decoded] = {}
    for index, (key, row) in enumerate(read.rows.items()):
        event = ChangeEvent(
            read.table,
            Op.READ,
            {c: row[c] for c in mapping.key},
            row,
            position,
            read.read_ms,
            tx,
            connector=family,
        )
        value = orjson.dumps(row, default=_jsonable)
        events[key] = Decoded(Message(topic, index, offset, key.encode(), value), event)
    for index, key in enumerate(sorted(read.absent), start=len(read.rows)):
        columns = read.absent_keys.get(key) or key_object(key, mapping.key)
        event = ChangeEvent(
            read.table, Op.DELETE, columns, None, position, read.read_ms, tx, connector=family
        )
        events[key] = Decoded(Message(topic, index, offset, key.encode(), None), event)
    return events


def event_matches(event: ChangeEvent, mapping: TableMapping, change_id: str) -> bool:
    """Whether `event` is the change named `change_id` (same table, key and transaction)."""
    if event.table != mapping.source:
        return False
    key, after = event.key, event.after or {}
    try:
        if len(key) == 1 and "" in key and len(mapping.key) == 1:  # a plain scalar key
            values: tuple[Any, ...] = (key[""],)
        else:
            values = tuple(key[c] if c in key else after[c] for c in mapping.key)
    except KeyError:
        return False
    return event_change_id(event, values) == change_id
