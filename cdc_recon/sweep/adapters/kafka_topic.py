"""Adapter `kafka_topic`: the CDC topics themselves, by time window (Kafka time).

`offsets_for_times` gives each partition's offset range for the window; every message
in it is decoded and staged with its change id and Kafka coordinates. The sweeper then
finds, among the messages the consumer group has already passed (offset below the
group's stored next offset), those that are neither in the ledger nor superseded: the
ones the service skipped (its offsets were moved past them) or quarantined (they are
open in the `failures` table, and the reason says why; one an operator retried or
resolved is accounted for, `cdc-recon failures`). Messages at or after the stored offset
are still in flight; tombstones and truncates are not changes. What this adapter cannot
see is what never reached the topic, or was deleted from it before it was read: that is
the trigger change log's job.

    >>> staged = KafkaTopics(settings).stage(cursor, window)   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from cdc_recon.batch import Message
from cdc_recon.codecs import AvroDecoder, decode
from cdc_recon.config import Settings
from cdc_recon.events import ChangeEvent, Op, change_id, key_text
from cdc_recon.exceptions import ConnectionFailed, DecodeError
from cdc_recon.kafka.consumer import schema_registry_client
from cdc_recon.kafka.window import WindowReader
from cdc_recon.pg.sql import copy_plain, position_literal
from cdc_recon.pg.transfer import copy_lines
from cdc_recon.sweep import queries as sweep_sql
from cdc_recon.sweep.adapters.base import Window

Decoded = ChangeEvent | DecodeError | None


def event_key_values(event: ChangeEvent, key: Sequence[str] | None) -> tuple[Any, ...]:
    """The event's key values in the mapping's key order (as the applier orders them);
    in the message key's own order for a table that is not mapped."""
    if key is None:
        return tuple(event.key.values())
    if len(event.key) == 1 and "" in event.key and len(key) == 1:
        return (event.key[""],)
    image = event.after or {}
    return tuple(event.key[c] if c in event.key else image.get(c) for c in key)


def stage_line(message: Message, decoded: Decoded, key: Sequence[str] | None) -> str | None:
    """One stage row (None for a tombstone or truncate, which change no row): the change's
    identity and position, and where the message is. An undecodable message has only its
    coordinates, which make its change id."""
    if decoded is None or (isinstance(decoded, ChangeEvent) and decoded.op is Op.TRUNCATE):
        return None
    at = dt.datetime.fromtimestamp(message.timestamp_ms / 1000, tz=dt.UTC)
    where = (at, message.topic, message.partition, message.offset)
    if isinstance(decoded, DecodeError):
        return copy_plain((coordinates_id(message), None, None, None, None, *where))
    tx = decoded.tx if decoded.tx is not None else str(decoded.source_ts_ms)
    keys = key_text(event_key_values(decoded, key))
    identity = (change_id(decoded.table, keys, tx), decoded.table, keys, tx)
    return copy_plain((*identity, position_literal(decoded.position.parts), *where))


def coordinates_id(message: Message) -> str:
    """The change id of a message nobody could decode: where it is."""
    return f"kafka:{message.topic}:{message.partition}:{message.offset}"


class KafkaTopics:
    """Reads the configured topics by time window; see the module docstring."""

    name = "kafka_topic"
    unit = "messages"
    transactions = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        registry = settings.schema_registry_url
        self._avro = AvroDecoder(schema_registry_client(registry)) if registry else None

    def earliest(self) -> dt.datetime | None:
        return None  # the topics' retention bounds it; a first run starts at now - retention

    def closed_until(self, grace: float) -> dt.datetime:
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=grace)

    def stage(self, cursor: Any, window: Window) -> int:
        staged = 0
        copy_sql = sweep_sql.copy_stage(sweep_sql.KAFKA_COLUMNS)
        with WindowReader(self.settings) as reader:
            ranges = reader.window(self.settings.topics, window.start, window.end)
            for messages in reader.read(ranges, self.settings.sweeper.batch_size):
                lines = [self._line(message) for message in messages]
                staged += copy_lines(cursor, copy_sql, [line for line in lines if line])
        return staged

    def _line(self, message: Message) -> str | None:
        decoded: Decoded
        try:
            decoded = decode(message.key, message.value, fmt=self.settings.format, avro=self._avro)
        except DecodeError as exc:
            decoded = exc
        except ConnectionFailed:
            raise
        except Exception as exc:  # a codec bug: the service quarantines these as undecodable
            decoded = DecodeError(f"{type(exc).__name__}: {exc}")
        key = None
        if isinstance(decoded, ChangeEvent):
            mapping = self.settings.mapping_for(decoded.table)
            key = mapping.key if mapping is not None else None
        return stage_line(message, decoded, key)

    def classify(self, cursor: Any, params: dict[str, Any], *, window: Window) -> bool:
        return False  # the sweeper's anti-join by change id

    def prune(self, before: dt.datetime) -> int:
        return 0  # Kafka's retention prunes the topics

    def close(self) -> None:
        pass
