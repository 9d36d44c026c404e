"""The `failures` table's dead-letter bookkeeping: which quarantined messages still wait
for their dead letter, and what became of each (`cdc_recon.kafka.producer` runs the
protocol; its docstring lists the steps).

    failures.dead_letter          pending | sent | too_large | refused
    failures.dead_letter_detail   why a failure has no dead letter (sizes, the refusal)

The applier inserts failures as `pending` (the column's default) in the batch's
transaction; `record` moves them on once the producer knows their outcome; `backlog`
reads those still pending, oldest first, for the producer to send again. Both run on
the service's thread, on a pooled connection of their own, never on the applier's.

    >>> journal = DeadLetterJournal(engine, "cdc_recon")     # doctest: +SKIP
    >>> journal.backlog(after_id=0, older_than=0, limit=500, max_bytes=1 << 25)  # doctest: +SKIP
    [(17, Failure(...)), ...]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import sqlalchemy as sa

from cdc_recon.batch import Failure, Message
from cdc_recon.exceptions import DatabaseUnavailable
from cdc_recon.pg.sql import quote_ident

T = TypeVar("T")
PENDING = "pending"  # the column's default (`cdc_recon.apply.control_tables`)


class DeadLetterJournal:
    """The producer's `DeliveryJournal` on the target's `failures` table."""

    def __init__(self, engine: sa.Engine, schema: str) -> None:
        self._engine = engine
        s = quote_ident(schema)
        # Sizes first, bytes only for the chosen rows: a chunk is cut by its raw bytes.
        self._sizes = sa.text(
            f"SELECT id, coalesce(octet_length(raw_key), 0) + coalesce(octet_length(raw_value), 0) "
            f"FROM {s}.failures WHERE dead_letter = '{PENDING}' AND id > :after "
            "AND created_at <= now() - make_interval(secs => :age) ORDER BY id LIMIT :limit"
        )
        self._rows = sa.text(
            "SELECT id, topic, kafka_partition, kafka_offset, raw_key, raw_value, reason, "
            f"detail, source_table FROM {s}.failures WHERE id = ANY(:ids) ORDER BY id"
        )
        # Only pending rows move: a late or repeated outcome never undoes an earlier one.
        self._record = sa.text(
            f"UPDATE {s}.failures AS f SET dead_letter = x.state, dead_letter_detail = x.detail "
            "FROM unnest(CAST(:topics AS text[]), CAST(:partitions AS int[]), "
            "CAST(:offsets AS bigint[]), CAST(:states AS text[]), CAST(:details AS text[])) "
            "AS x(topic, kafka_partition, kafka_offset, state, detail) "
            "WHERE f.topic = x.topic AND f.kafka_partition = x.kafka_partition "
            f"AND f.kafka_offset = x.kafka_offset AND f.dead_letter = '{PENDING}'"
        )

    def backlog(
        self, *, after_id: int, older_than: float, limit: int, max_bytes: int
    ) -> tuple[list[tuple[int, Failure]], bool]:
        """Pending failures after `after_id`, pending for `older_than` seconds, oldest
        first: at most `limit`, and within `max_bytes` of raw bytes after the first;
        and whether more are pending after them."""

        def read() -> tuple[list[tuple[int, Failure]], bool]:
            with self._engine.connect() as conn:
                params = {"after": after_id, "age": older_than, "limit": limit + 1}
                sizes = conn.execute(self._sizes, params).all()
                ids = chunk([tuple(row) for row in sizes[:limit]], max_bytes)
                if not ids:
                    return [], False
                rows = conn.execute(self._rows, {"ids": ids}).all()
            return [(row[0], _failure(*row[1:])) for row in rows], len(sizes) > len(ids)

        return _guard(read)

    def record(self, outcomes: Sequence[tuple[Message, str, str | None]]) -> None:
        """Move the pending rows of `outcomes` to their states, in one UPDATE."""
        if not outcomes:
            return
        # In key order: two instances sending the same backlog lock its rows alike.
        outcomes = sorted(outcomes, key=lambda o: (o[0].topic, o[0].partition, o[0].offset))
        params = {
            "topics": [m.topic for m, _, _ in outcomes],
            "partitions": [m.partition for m, _, _ in outcomes],
            "offsets": [m.offset for m, _, _ in outcomes],
            "states": [state for _, state, _ in outcomes],
            "details": [detail for _, _, detail in outcomes],
        }

        def write() -> None:
            with self._engine.begin() as conn:
                conn.execute(self._record, params)

        _guard(write)


def chunk(sizes: Sequence[tuple[int, int]], max_bytes: int) -> list[int]:
    """The ids of the leading `(id, size)` pairs within `max_bytes`; the first always."""
    ids: list[int] = []
    total = 0
    for row_id, size in sizes:
        if ids and total + size > max_bytes:
            break
        ids.append(row_id)
        total += size
    return ids


def _failure(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    detail: str,
    table: str | None,
) -> Failure:
    raw_key = bytes(key) if key is not None else None
    raw_value = bytes(value) if value is not None else None
    return Failure(Message(topic, partition, offset, raw_key, raw_value), reason, detail, table)


def _guard(action: Callable[[], T]) -> T:
    try:
        return action()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot reach the target database: {reason}", service="target"
        ) from exc
