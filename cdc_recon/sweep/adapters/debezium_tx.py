"""Adapter `debezium_tx`: Debezium's transaction metadata as evidence of what committed.

With `provide.transaction.metadata=true` Debezium writes a BEGIN and an END event per
transaction to its transaction topic; the END event counts the transaction's change
events per table:

    {"status": "END", "id": "571:53195832", "event_count": 2,
     "data_collections": [{"data_collection": "public.customers", "event_count": 2}]}

For PostgreSQL `id` is `txId:lsn`. A transaction whose ledger rows for a table (found by
the xid the ledger stores) fall short of that table's `event_count` is a gap. The keys
of the missing changes are not known here: a gap is recorded with change id
`table:*:tx` and is not replayable by key (replay its window with `cdc-recon replay`).
Two changes of one key in one transaction share a change id, so the ledger holds one row
for them and such a transaction is reported short; only mapped tables are checked.

    >>> parse_end_event(value, timestamp_ms=0)    # doctest: +SKIP
    [TxTable(tx='571', table='public.customers', event_count=2, lsn=53195832, ...)]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from cdc_recon.config import Settings
from cdc_recon.events import pg_tx
from cdc_recon.kafka.window import WindowReader
from cdc_recon.pg.sql import copy_plain, position_literal
from cdc_recon.pg.transfer import copy_lines
from cdc_recon.sweep import queries as sweep_sql
from cdc_recon.sweep.adapters.base import Window


@dataclass(frozen=True, slots=True)
class TxTable:
    """One table's share of one committed transaction."""

    tx: str
    table: str
    event_count: int
    lsn: int | None
    at: dt.datetime
    label: str  # Debezium's transaction id, as written

    def line(self) -> str:
        position = None if self.lsn is None else position_literal((self.lsn,))
        return copy_plain((self.tx, self.table, self.event_count, position, self.at, self.label))


def _payload(value: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("payload"), dict):
        data = data["payload"]
    return data if isinstance(data, dict) else None


def parse_end_event(value: bytes | None, *, timestamp_ms: int) -> list[TxTable]:
    """The tables of an END event (none for BEGIN events and anything else)."""
    data = _payload(value) if value else None
    if data is None or data.get("status") != "END" or not isinstance(data.get("id"), str):
        return []
    label = data["id"]
    txid, _, lsn = label.partition(":")
    if not txid.isdigit():
        return []
    at = dt.datetime.fromtimestamp(timestamp_ms / 1000, tz=dt.UTC)
    found = []
    for collection in data.get("data_collections") or ():
        if not isinstance(collection, dict):
            continue
        table, count = collection.get("data_collection"), collection.get("event_count")
        if isinstance(table, str) and isinstance(count, int):
            position = int(lsn) if lsn.isdigit() else None
            found.append(TxTable(pg_tx(int(txid)), table, count, position, at, label))
    return found


class DebeziumTransactions:
    """Reads END events of the transaction topic by time window (Kafka time)."""

    name = "debezium_tx"
    unit = "transactions"
    transactions = True

    def __init__(self, settings: Settings) -> None:
        if not settings.sweeper.transaction_topic:
            raise ValueError("adapter debezium_tx needs sweeper.transaction_topic")
        self.settings = settings
        self.topic = settings.sweeper.transaction_topic
        self.tables = frozenset(m.source for m in settings.tables)

    def earliest(self) -> dt.datetime | None:
        return None  # the topic's retention bounds it; a first run starts at now - retention

    def closed_until(self, grace: float) -> dt.datetime:
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=grace)

    def stage(self, cursor: Any, window: Window) -> int:
        staged = 0
        batch = self.settings.sweeper.batch_size
        with WindowReader(self.settings) as reader:
            ranges = reader.window([self.topic], window.start, window.end)
            for messages in reader.read(ranges, batch):
                rows = self._rows(
                    parse_end_event(m.value, timestamp_ms=m.timestamp_ms) for m in messages
                )
                staged += copy_lines(cursor, sweep_sql.copy_stage_tx(), [r.line() for r in rows])
        return staged

    def _rows(self, parsed: Iterable[list[TxTable]]) -> list[TxTable]:
        return [row for rows in parsed for row in rows if row.table in self.tables]

    def classify(self, cursor: Any, params: dict[str, Any], *, window: Window) -> bool:
        return False  # the sweeper's anti-join by change id

    def prune(self, before: dt.datetime) -> int:
        return 0  # Kafka's retention prunes the topic

    def close(self) -> None:
        pass
