"""The ledger's partitions as plain values: buckets, names, gaps and retention decisions.

Pure functions, no database: `cdc_recon.apply.ledger` reads the catalog, asks these what
to create and what to drop, and runs the DDL. Every time is UTC; a bucket is an hour, a
day (from midnight) or a week (from Monday midnight) of source time, `[start, end)`.

    >>> day = Granularity.of("day")
    >>> day.bucket(dt.datetime(2026, 12, 4, 13, tzinfo=dt.UTC))[0].isoformat()
    '2026-12-04T00:00:00+00:00'
    >>> partition_name(dt.datetime(2026, 12, 4, tzinfo=dt.UTC))
    'ledger_p20261204'
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MONDAY = dt.datetime(1970, 1, 5, tzinfo=dt.UTC)  # the first Monday after the epoch
# Seconds a ledger row's source time may precede the sweeper window it belongs to: the
# sweeper reads the ledger from `window start - grace - LEDGER_SLACK`, so a partition is
# no longer read once the watermark is that far past its end.
LEDGER_SLACK = 60.0
FIRST = dt.datetime.min.replace(tzinfo=dt.UTC)
LAST = dt.datetime.max.replace(tzinfo=dt.UTC)
_FIRST_MS = int((FIRST - EPOCH).total_seconds()) * 1000
PARTITION_NAME = re.compile(r"^ledger_p(\d{8})(?:_(\d{2}))?$")
# The ledger's only unique index, and each partition's (`ledger_change_id_p20261204`):
# the applier recognises a redelivery by a violation of one of them.
CHANGE_ID_INDEX = "ledger_change_id"
Range = tuple[dt.datetime, dt.datetime]


@dataclass(frozen=True)
class Granularity:
    """How much source time one partition holds (`ledger.partition`)."""

    name: str
    length: dt.timedelta
    origin: dt.datetime  # a bucket starts at origin + k * length

    @classmethod
    def of(cls, name: str) -> Granularity:
        if name == "hour":
            return cls(name, dt.timedelta(hours=1), EPOCH)
        if name == "day":
            return cls(name, dt.timedelta(days=1), EPOCH)
        if name == "week":
            return cls(name, dt.timedelta(weeks=1), MONDAY)
        raise ValueError(f"not a ledger partition size: {name!r} (hour, day or week)")

    @property
    def millis(self) -> int:
        return int(self.length.total_seconds()) * 1000

    def bucket(self, moment: dt.datetime) -> Range:
        """The bucket holding `moment`."""
        start = self.origin + ((moment - self.origin) // self.length) * self.length
        return start, start + self.length

    def bucket_of_millis(self, millis: int) -> Range | None:
        """The bucket of epoch milliseconds; None past what Python dates hold (the
        ledger refuses such a time anyway: the change is quarantined)."""
        offset = int((self.origin - EPOCH).total_seconds()) * 1000
        start_ms = ((millis - offset) // self.millis) * self.millis + offset
        try:
            start = EPOCH + dt.timedelta(milliseconds=max(start_ms, _FIRST_MS))
        except OverflowError:
            return None
        try:
            return start, EPOCH + dt.timedelta(milliseconds=start_ms + self.millis)
        except OverflowError:  # the bucket of year 9999's last times ends there
            return start, LAST

    def ahead(self, now: dt.datetime, count: int) -> list[Range]:
        """The bucket of `now` and the `count` after it."""
        start, _ = self.bucket(now)
        return [(start + i * self.length, start + (i + 1) * self.length) for i in range(count + 1)]


def buckets_of(millis: Iterable[int], granularity: Granularity) -> list[Range]:
    """The distinct buckets of these source times (epoch ms), oldest first."""
    starts = {m - (m - _offset(granularity)) % granularity.millis for m in millis}
    found = (granularity.bucket_of_millis(start) for start in sorted(starts))
    return [bucket for bucket in found if bucket is not None]


def _offset(granularity: Granularity) -> int:
    return int((granularity.origin - EPOCH).total_seconds()) * 1000


def partition_name(start: dt.datetime) -> str:
    """`ledger_pYYYYMMDD`, with `_HH` when the partition starts off midnight (hours)."""
    name = f"ledger_p{start.year:04d}{start.month:02d}{start.day:02d}"
    return name if start.hour == 0 else f"{name}_{start.hour:02d}"


def gaps(wanted: Range, existing: Sequence[Range]) -> list[Range]:
    """The parts of `wanted` no existing partition covers (the partition size may have
    changed since they were made: a new one only fills what is free)."""
    free = [wanted]
    for low, high in existing:
        pieces: list[Range] = []
        for start, end in free:
            if high <= start or low >= end:
                pieces.append((start, end))
                continue
            if start < low:
                pieces.append((start, low))
            if high < end:
                pieces.append((high, end))
        free = pieces
    return [(start, end) for start, end in free if start < end]


@dataclass(frozen=True)
class Partition:
    """One partition of the ledger as the catalog holds it."""

    name: str
    start: dt.datetime
    end: dt.datetime
    rows: int = 0  # the planner's estimate (0 before the first analyze)
    detaching: bool = False  # detached concurrently, not finalised (a drop was cut short)


@dataclass(frozen=True)
class Retention:
    """When a partition may go (`ledger.retention`, `ledger.drop_unswept`)."""

    keep: dt.timedelta  # source time kept behind now
    sweep_margin: dt.timedelta  # how far behind its watermark the sweeper still reads
    drop_unswept: bool = False  # drop by age alone (no sweeper runs)

    def cutoff(self, now: dt.datetime, watermark: dt.datetime | None) -> dt.datetime | None:
        """A partition ending at or before this may be dropped; None: none may.

        P1: never past what the sweeper has checked. Without a watermark (no sweep
        ever ran) nothing is dropped, unless `drop_unswept` says so.
        """
        by_age = now - self.keep
        if self.drop_unswept:
            return by_age
        if watermark is None:
            return None
        return min(by_age, watermark - self.sweep_margin)

    def expired(
        self, partitions: Sequence[Partition], now: dt.datetime, watermark: dt.datetime | None
    ) -> list[Partition]:
        """The partitions to drop, oldest first."""
        cutoff = self.cutoff(now, watermark)
        if cutoff is None:
            return []
        return sorted((p for p in partitions if p.end <= cutoff), key=lambda p: p.start)

    def next_drop(
        self, partitions: Sequence[Partition], now: dt.datetime, watermark: dt.datetime | None
    ) -> tuple[Partition, dt.datetime | None] | None:
        """The oldest partition and when it becomes old enough to drop: by age, and
        (None) not before the sweeper's watermark passes its end."""
        if not partitions:
            return None
        oldest = min(partitions, key=lambda p: p.start)
        due = oldest.end + self.keep
        if self.drop_unswept:
            return oldest, due
        if watermark is None or watermark - self.sweep_margin < oldest.end:
            return oldest, None
        return oldest, due
