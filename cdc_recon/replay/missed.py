"""`replay_missed`: replay the changes the sweeper found missing, from Kafka or the source."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from cdc_recon.batch import Decoded, Failure
from cdc_recon.codecs import AvroDecoder
from cdc_recon.codecs.messages import decode_message
from cdc_recon.config import Settings, TableMapping
from cdc_recon.exceptions import ConfigError, ConnectionFailed, SourceBusy
from cdc_recon.kafka.window import OffsetsRead, WindowReader
from cdc_recon.replay.changes import (
    MissedChange,
    ReplayOutcome,
    chunks,
    event_matches,
    normal_key_text,
    reread_events,
)
from cdc_recon.replay.sinks import RowReader, Sink, avro_decoder, source_reader, target_sink
from cdc_recon.source_db.rows import key_object

REPLAYED, FAILED, PENDING = "replayed", "failed", "pending"
Fetched = list[tuple[MissedChange, Decoded]]
KeyOutcomes = dict[tuple[str, str], ReplayOutcome]  # by (source table, key_text)


def replay_missed(settings: Settings, missed: Sequence[MissedChange]) -> dict[str, ReplayOutcome]:
    """Replay the changes the sweeper found missing; an outcome per change id.

    A change whose Kafka coordinates are known and still retained is re-applied from that
    message, and the ledger records it under its own change id. Any other (no
    coordinates; the message is gone, undecodable or holds another change) is replaced by
    a re-read of its key's current row from the source: one locked query per table and
    batch of keys, a key without a row becoming a delete (`cdc_recon.source_db.rows`).
    Messages are applied before re-reads, which are newer.

    `pending` means try again later (the source was busy or unreachable, the row changed
    while being read); `failed` says what to fix. Raises only when the target cannot be
    written (`ApplyError`, `TransientDatabaseError`, `DatabaseUnavailable`).

        >>> outcomes = replay_missed(settings, [missed])       # doctest: +SKIP
        >>> outcomes[missed.change_id].status                  # doctest: +SKIP
        'replayed'
    """
    outcomes: dict[str, ReplayOutcome] = {}
    mapped: list[MissedChange] = []
    for change in missed:
        if settings.mapping_for(change.source_table) is None:
            outcomes[change.change_id] = ReplayOutcome(FAILED, "table is not mapped")
        else:
            mapped.append(change)
    if not mapped:
        return outcomes
    fetched, reasons = _fetch_from_kafka(settings, mapped)
    with target_sink(settings, dry_run=False) as sink:
        outcomes.update(_apply_fetched(sink, fetched, settings.service.batch_size))
        rereads = [c for c in mapped if c.change_id in reasons]
        outcomes.update(_reread(settings, sink, rereads, reasons))
    return outcomes


# -- from Kafka ----------------------------------------------------------------------------


def _fetch_from_kafka(
    settings: Settings, changes: Sequence[MissedChange]
) -> tuple[Fetched, dict[str, str]]:
    """The decoded messages of the changes with coordinates; why the others need a re-read."""
    reasons = {c.change_id: "no Kafka coordinates" for c in changes if c.coordinates is None}
    groups: dict[tuple[str, int], list[MissedChange]] = {}
    for change in changes:
        if change.coordinates is not None:
            topic, partition, _ = change.coordinates
            groups.setdefault((topic, partition), []).append(change)
    fetched: Fetched = []
    if not groups:
        return fetched, reasons
    try:
        avro = avro_decoder(settings)
        with WindowReader(settings) as reader:
            for (topic, partition), group in groups.items():
                offsets = [c.coordinates[2] for c in group if c.coordinates]
                read = reader.read_offsets(topic, partition, offsets)
                for change in group:
                    found = _from_message(read, change, settings, avro)
                    if isinstance(found, str):
                        reasons[change.change_id] = found
                    else:
                        fetched.append((change, found))
    except ConnectionFailed as exc:
        done = {c.change_id for c, _ in fetched} | reasons.keys()
        for group in groups.values():
            reasons.update({c.change_id: f"Kafka: {exc}" for c in group if c.change_id not in done})
    return fetched, reasons


def _from_message(
    read: OffsetsRead, change: MissedChange, settings: Settings, avro: AvroDecoder | None
) -> Decoded | str:
    """The change's decoded message, or why it cannot be replayed from Kafka."""
    topic, partition, offset = change.coordinates or ("", 0, 0)
    where = f"{topic}[{partition}]@{offset}"
    message = read.messages.get(offset)
    if offset in read.not_retained:
        return f"{where} is no longer retained"
    if message is None:
        return f"{where} does not exist"
    item = decode_message(message, settings.format, avro)
    if isinstance(item, Failure):
        return f"{where} cannot be decoded: {item.detail}"
    mapping = settings.mapping_for(change.source_table)
    if item.event is None or mapping is None:
        return f"{where} is a tombstone"
    if not event_matches(item.event, mapping, change.change_id):
        return f"{where} holds another change"
    return item


def _apply_fetched(sink: Sink, fetched: Fetched, size: int) -> dict[str, ReplayOutcome]:
    outcomes: dict[str, ReplayOutcome] = {}
    for chunk in chunks(fetched, size):
        result = sink.apply([item for _, item in chunk])
        failures = {
            (f.message.topic, f.message.partition, f.message.offset): f for f in result.failures
        }
        for change, item in chunk:
            m = item.message
            failure = failures.get((m.topic, m.partition, m.offset))
            outcomes[change.change_id] = (
                ReplayOutcome(FAILED, f"{failure.reason}: {failure.detail}")
                if failure
                else ReplayOutcome(REPLAYED, f"from Kafka {m.topic}[{m.partition}]@{m.offset}")
            )
    return outcomes


# -- from the source -----------------------------------------------------------------------


def _reread(
    settings: Settings, sink: Sink, changes: Sequence[MissedChange], reasons: dict[str, str]
) -> dict[str, ReplayOutcome]:
    """Re-read the keys of `changes`; each outcome's detail starts with why."""
    if not changes:
        return {}
    with contextlib.ExitStack() as stack:
        try:
            rows = stack.enter_context(source_reader(settings))
        except (ConfigError, ConnectionFailed) as exc:
            status = FAILED if isinstance(exc, ConfigError) else PENDING
            return {c.change_id: _why(ReplayOutcome(status, str(exc)), c, reasons) for c in changes}
        by_key = _reread_tables(settings, rows, sink, changes)
    return {c.change_id: _why(by_key[(c.source_table, _key(c))], c, reasons) for c in changes}


def _why(outcome: ReplayOutcome, change: MissedChange, reasons: dict[str, str]) -> ReplayOutcome:
    return ReplayOutcome(outcome.status, f"{reasons[change.change_id]}; {outcome.detail}")


def _key(change: MissedChange) -> str:
    try:
        return normal_key_text(change.key_text)
    except ValueError:
        return change.key_text


def _reread_tables(
    settings: Settings, rows: RowReader, sink: Sink, changes: Sequence[MissedChange]
) -> KeyOutcomes:
    outcomes: KeyOutcomes = {}
    for mapping in settings.tables:
        keys: set[str] = set()
        for change in (c for c in changes if c.source_table == mapping.source):
            key = _key(change)
            try:
                key_object(key, mapping.key)
                keys.add(key)
            except ValueError as exc:
                outcomes[(mapping.source, key)] = ReplayOutcome(FAILED, f"bad key_text: {exc}")
        for chunk in chunks(sorted(keys), settings.service.batch_size):
            outcomes.update(_reread_keys(rows, sink, mapping, chunk))
    return outcomes


def _reread_keys(
    rows: RowReader, sink: Sink, mapping: TableMapping, keys: Sequence[str]
) -> KeyOutcomes:
    """Re-read `keys` of one table in one batch and apply them."""
    table = mapping.source
    try:
        found = rows.read_keys(mapping, keys)
    except (SourceBusy, ConnectionFailed) as exc:
        return {(table, k): ReplayOutcome(PENDING, f"source: {exc}") for k in keys}
    except ConfigError as exc:
        return {(table, k): ReplayOutcome(FAILED, f"source: {exc}") for k in keys}
    outcomes: KeyOutcomes = {
        (table, k): ReplayOutcome(PENDING, "the row changed while being re-read")
        for k in found.unresolved
    }
    for read in found.reads:
        events = reread_events(read, mapping)
        if not events:
            continue
        result = sink.apply(list(events.values()))
        failures = {(f.message.key or b"").decode(): f for f in result.failures}
        for key, decoded in events.items():
            failure = failures.get(key)
            what = "deleted" if decoded.message.value is None else "row"
            outcomes[(table, key)] = (
                ReplayOutcome(FAILED, f"re-read {what}: {failure.reason}: {failure.detail}")
                if failure
                else ReplayOutcome(REPLAYED, f"re-read from the source at {read.where} ({what})")
            )
    return outcomes
