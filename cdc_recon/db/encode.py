"""COPY text for a batch, built before the transaction (the applier's Python half).

Everything here is CPU work on plain values, so the service can run it for the next
batch while PostgreSQL applies the current one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cdc_recon.batch import Failure
from cdc_recon.db.sql import NULL, copy_line, escape, position_literal
from cdc_recon.db.statements import TableStatements
from cdc_recon.mapping import MappedChange, Winner


@dataclass(frozen=True)
class EncodedTable:
    """One target table's winners as stage COPY text."""

    table: TableStatements
    text: str
    missing_sets: dict[frozenset[int], int]  # columns a row lacks -> its `_uset` number
    has_deletes: bool


@dataclass(frozen=True)
class EncodedLedger:
    text: str  # one line per distinct change id
    changes: int  # changes encoded, repeats of a change id included


@dataclass(frozen=True)
class Encoded:
    tables: list[EncodedTable]
    ledger: EncodedLedger


@dataclass
class PreparedBatch:
    """A batch mapped and encoded, ready for `Applier.write`."""

    changes: list[MappedChange] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    skipped: int = 0
    encoded: Encoded | None = None


def encode_winners(table: TableStatements, winners: dict[str, Winner]) -> EncodedTable:
    """Stage lines: the row's columns, then `_key`, `_pos`, `_op`, `_uset`."""
    missing_sets: dict[frozenset[int], int] = {}
    lines = []
    has_deletes = False
    encoders = table.encoders
    for key, winner in winners.items():
        change = winner.change
        gap = "f"
        if winner.deleted:
            has_deletes = True
            uset = -1
        else:
            uset = missing_sets.setdefault(winner.missing, len(missing_sets))
            event = change.decoded.event
            if winner.missing and event is not None and event.unavailable:
                gap = "t"  # the row may be created without its unchanged-TOAST columns
        lines.append(
            f"{copy_line(winner.row, encoders)}\t{escape(key)}\t"
            f"{position_literal(change.position.parts)}\t{change.op.value}\t{uset}\t{gap}"
        )
    return EncodedTable(table, "\n".join(lines) + "\n", missing_sets, has_deletes)


def encode_ledger(changes: list[MappedChange]) -> EncodedLedger:
    """One ledger line per distinct change id (a transaction may touch a row twice).

    A change whose key already had a newer position earlier in the batch (it arrived
    late) is marked, so that the ledger records it as superseded like one that arrives
    after the newer change was committed.
    """
    lines = []
    seen: set[str] = set()
    newest: dict[tuple[str, str], tuple[int, ...]] = {}
    escaped: dict[str, str] = {}  # table and topic names repeat on every line
    for change in changes:
        if change.change_id in seen:
            continue
        seen.add(change.change_id)
        event = change.decoded.event
        message = change.decoded.message
        assert event is not None
        key = (change.target, change.key_text)
        parts = change.position.parts
        before = newest.get(key)
        late = "t" if before is not None and before >= parts else "f"
        if before is None or parts > before:
            newest[key] = parts
        names = escaped.get(event.table)
        if names is None:
            names = escaped[event.table] = f"{escape(event.table)}\t{escape(change.target)}"
        topic = escaped.get(message.topic)
        if topic is None:
            topic = escaped[message.topic] = escape(message.topic)
        tx = NULL if event.tx is None else escape(event.tx)
        lines.append(
            f"{escape(change.change_id)}\t{names}\t{escape(change.key_text)}\t"
            f"{change.op.value}\t{position_literal(parts)}\t{tx}\t"
            f"{event.source_ts_ms}\t{topic}\t{message.partition}\t{message.offset}\t{late}"
        )
    return EncodedLedger("\n".join(lines) + "\n", len(changes))
