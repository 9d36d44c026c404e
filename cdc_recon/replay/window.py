"""`replay_window`: re-apply the changes of a time window, from Kafka or the source database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Literal

from cdc_recon.batch import ApplyResult, Decoded, Failure
from cdc_recon.codecs.messages import decode_batch
from cdc_recon.config import Settings, TableMapping
from cdc_recon.exceptions import ConfigError, UsageError
from cdc_recon.kafka.window import WindowReader
from cdc_recon.replay.changes import ReplaySummary, chunks, reread_events
from cdc_recon.replay.sinks import (
    RowReader,
    Sink,
    avro_decoder,
    select_tables,
    source_reader,
    target_sink,
)
from cdc_recon.source_db.rows import SourceRead

LOG = logging.getLogger("cdc_recon.replay")
SOURCES = ("kafka", "source-db")
Progress = Callable[[int, int | None], None]  # (read so far, total when known)


def replay_window(
    settings: Settings,
    *,
    start: datetime,
    end: datetime,
    tables: Sequence[str] | None = None,
    source: Literal["kafka", "source-db"] = "kafka",
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ReplaySummary:
    """Re-apply the changes of `[start, end)` (aware datetimes) through the applier.

    `source="kafka"` replays the CDC topics' messages timestamped in the window;
    `"source-db"` re-reads the current rows of the keys the source's change log shows
    changed in the window (every row of the tables without a change log). `tables`
    limits the replay to those source tables. `dry_run` classifies (would apply,
    superseded, duplicate) without writing. `progress(read, total)` is called after each
    batch; `total` is None when unknown.

        >>> start = parse_time("-2h", now)                                   # doctest: +SKIP
        >>> summary = replay_window(settings, start=start, end=now)         # doctest: +SKIP
        >>> summary.applied, summary.superseded, summary.duplicates         # doctest: +SKIP
    """
    if source not in SOURCES:
        raise UsageError(
            f"unknown replay source {source!r}; expected one of {SOURCES}", value=source
        )
    if start >= end:
        raise UsageError(f"empty window: {start.isoformat()} is not before {end.isoformat()}")
    mappings = select_tables(settings, tables)
    report = progress or _no_progress
    with target_sink(settings, dry_run=dry_run) as sink:
        if source == "kafka":
            wanted = {m.source for m in mappings} if tables else None
            return _from_kafka(settings, sink, start, end, wanted, report)
        return _from_source(settings, sink, start, end, mappings, report)


def _no_progress(read: int, total: int | None) -> None:
    """Progress is not reported."""


def _from_kafka(
    settings: Settings,
    sink: Sink,
    start: datetime,
    end: datetime,
    wanted: set[str] | None,
    report: Progress,
) -> ReplaySummary:
    """The topics' messages in the window; with `wanted`, only those tables' events."""
    if not settings.topics:
        raise ConfigError("config: topics: no topics to replay from", key="topics")
    avro = avro_decoder(settings)
    summary = ReplaySummary(dry_run=sink.dry_run)
    with WindowReader(settings) as reader:
        ranges = reader.window(settings.topics, start, end)
        total = sum(r.size for r in ranges.values())
        report(0, total)
        for batch in reader.read(ranges, settings.service.batch_size):
            items = decode_batch(batch, settings.format, avro)
            kept = [item for item in items if _wanted(item, wanted)]
            skipped = len(items) - len(kept)
            summary = summary.plus(sink.apply(kept), read=len(batch), skipped=skipped)
            report(summary.read, total)
    return summary


def _wanted(item: Decoded | Failure, tables: set[str] | None) -> bool:
    """Without a table filter everything goes to the applier (failures are quarantined
    again, idempotently); with one, only events of those tables: a tombstone or an
    undecodable message cannot be attributed to a table, so it is skipped."""
    if tables is None:
        return True
    return isinstance(item, Decoded) and item.event is not None and item.event.table in tables


def _from_source(
    settings: Settings,
    sink: Sink,
    start: datetime,
    end: datetime,
    mappings: Sequence[TableMapping],
    report: Progress,
) -> ReplaySummary:
    summary = ReplaySummary(dry_run=sink.dry_run)
    size = settings.service.batch_size
    with source_reader(settings) as rows:
        names = [m.source for m in mappings]
        keys = rows.changed_keys(settings.sweeper.changelog_schema, start, end, names)
        total: int | None = None
        if keys is None:
            LOG.warning("no change log in the source: re-reading every row of %s", names)
            reads = _all_rows(rows, mappings, size)
        else:
            total = sum(len(v) for v in keys.values())
            reads = _changed_rows(rows, mappings, keys, size)
        report(0, total)
        for mapping, read, unresolved in reads:
            events = list(reread_events(read, mapping).values())
            result = sink.apply(events) if events else ApplyResult()
            summary = summary.plus(result, read=len(events) + unresolved, failed=unresolved)
            report(summary.read, total)
    return summary


def _all_rows(
    rows: RowReader, mappings: Sequence[TableMapping], size: int
) -> Iterator[tuple[TableMapping, SourceRead, int]]:
    for mapping in mappings:
        for read in rows.scan(mapping, size):
            yield mapping, read, 0


def _changed_rows(
    rows: RowReader, mappings: Sequence[TableMapping], keys: dict[str, list[str]], size: int
) -> Iterator[tuple[TableMapping, SourceRead, int]]:
    """Re-reads of the changed keys; the last read of a chunk carries its unresolved count."""
    for mapping in mappings:
        for chunk in chunks(keys.get(mapping.source, []), size):
            found = rows.read_keys(mapping, chunk)
            if found.unresolved:
                LOG.warning(
                    "%s: %d key(s) changed while being re-read; replay the window again",
                    mapping.source,
                    len(found.unresolved),
                )
            for index, read in enumerate(found.reads):
                last = index == len(found.reads) - 1
                yield mapping, read, len(found.unresolved) if last else 0
