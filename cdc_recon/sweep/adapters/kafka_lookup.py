"""Finding, in the CDC topics, the messages of changes known only by (table, key, op, second).

The MariaDB change log names a missed change by its table, key, op and start second, not
by its GTID. While the connector's message is retained, it is in the topics with a
Kafka timestamp at or after that second (Connect stamps it when it produces it). Reading
the topics from the earliest missed second (less `EARLY` for clock steps) to now, each
message is decoded as the service decodes it, and a message whose identity is wanted
and whose change id the ledger does not hold is taken, one per missed change: its change
id, GTID, position and coordinates let the sweeper replay it from Kafka. A change
without such a message (deleted from Kafka, expired, or never written because the
connector skipped it) keeps its log id and is replayed by re-reading its row.

    >>> found = find_messages(settings, wanted, not_in_ledger)   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from cdc_recon.batch import Message
from cdc_recon.codecs import AvroDecoder, decode
from cdc_recon.config import Settings
from cdc_recon.events import ChangeEvent, change_id, key_text
from cdc_recon.exceptions import ConnectionFailed, DecodeError
from cdc_recon.kafka.consumer import schema_registry_client
from cdc_recon.kafka.window import WindowReader
from cdc_recon.sweep.adapters.kafka_topic import event_key_values

EARLY = 5.0  # seconds before a change's second that its message may be stamped
Identity = tuple[str, str, str, int]  # table, key_text, op, second


@dataclass(frozen=True)
class Found:
    """One message of a wanted identity."""

    identity: Identity
    change_id: str
    tx: str
    position: tuple[int, ...]
    topic: str
    partition: int
    offset: int


def identity_of(event: ChangeEvent, settings: Settings) -> tuple[Identity, str] | None:
    """The event's (table, key, op, second) and change id; None for unmapped tables."""
    mapping = settings.mapping_for(event.table)
    if mapping is None:
        return None
    keys = key_text(event_key_values(event, mapping.key))
    tx = event.tx if event.tx is not None else str(event.source_ts_ms)
    identity = (event.table, keys, event.op.value, event.source_ts_ms // 1000)
    return identity, change_id(event.table, keys, tx)


def find_messages(
    settings: Settings,
    wanted: Mapping[Identity, int],
    not_in_ledger: Callable[[list[str]], set[str]],
    *,
    now: dt.datetime | None = None,
) -> list[Found]:
    """Up to `wanted[identity]` messages of each identity whose change id is not in the
    ledger (`not_in_ledger(ids)` answers which are not)."""
    if not wanted or not settings.topics:
        return []
    first = min(second for _, _, _, second in wanted)
    start = dt.datetime.fromtimestamp(first - EARLY, tz=dt.UTC)
    end = now or dt.datetime.now(dt.UTC)
    if start >= end:
        return []
    candidates: dict[Identity, list[Found]] = {}
    registry = settings.schema_registry_url
    avro = AvroDecoder(schema_registry_client(registry)) if registry else None
    with WindowReader(settings) as reader:
        ranges = reader.window(settings.topics, start, end)
        for messages in reader.read(ranges, settings.sweeper.batch_size):
            for found in _matches(messages, settings, wanted, avro):
                candidates.setdefault(found.identity, []).append(found)
    return _pick(candidates, wanted, not_in_ledger)


def _matches(
    messages: Iterable[Message],
    settings: Settings,
    wanted: Mapping[Identity, int],
    avro: AvroDecoder | None,
) -> Iterable[Found]:
    for message in messages:
        try:
            event = decode(message.key, message.value, fmt=settings.format, avro=avro)
        except ConnectionFailed:
            raise
        except (DecodeError, Exception):  # names no identity (a codec bug included): re-read
            continue
        if event is None:
            continue
        named = identity_of(event, settings)
        if named is None or named[0] not in wanted:
            continue
        identity, cid = named
        tx = event.tx if event.tx is not None else str(event.source_ts_ms)
        yield Found(
            identity,
            cid,
            tx,
            event.position.parts,
            message.topic,
            message.partition,
            message.offset,
        )


def _pick(
    candidates: Mapping[Identity, list[Found]],
    wanted: Mapping[Identity, int],
    not_in_ledger: Callable[[list[str]], set[str]],
) -> list[Found]:
    ids = sorted({f.change_id for found in candidates.values() for f in found})
    free = not_in_ledger(ids) if ids else set()
    picked: list[Found] = []
    for identity, found in candidates.items():
        seen: set[str] = set()
        unapplied = []
        for f in sorted(found, key=lambda f: (f.topic, f.partition, f.offset)):
            if f.change_id in free and f.change_id not in seen:
                seen.add(f.change_id)
                unapplied.append(f)
        picked.extend(unapplied[: wanted[identity]])
    return picked
