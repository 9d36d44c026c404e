"""COPY text for a batch, built before the transaction (the applier's Python half).

Everything here is CPU work on plain values, so the service can run it for the next
batch while PostgreSQL applies the current one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from cdc_recon.apply import native
from cdc_recon.apply.mapping import MappedChange, Winner
from cdc_recon.apply.statements import TableStatements
from cdc_recon.batch import Failure
from cdc_recon.pg.sql import NULL, copy_line, escape, position_literal


@dataclass(frozen=True)
class EncodedTable:
    """One target table's winners as stage COPY text."""

    table: TableStatements
    text: str
    missing_sets: dict[frozenset[int], int]  # columns a row lacks -> its `_uset` number
    has_deletes: bool
    rows: int  # lines in `text`, one per key
    several: bool  # some key changed more than once in the batch (`_first` set)


@dataclass(frozen=True)
class EncodedLedger:
    text: str  # one line per distinct change id
    changes: int  # changes encoded, repeats of a change id included
    counts: dict[tuple[str, str, str], int]  # lines per (target table, op, outcome)


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
    """Stage lines: the row's columns, then `_key`, `_pos`, `_op`, `_uset`, `_gap` and
    `_first` (NULL when the key changed once in the batch)."""
    if native.ENCODER is not None:
        missing_sets: dict[frozenset[int], int] = {}
        try:
            text, has_deletes, several = native.ENCODER.winner_text(
                winners, table.encoders, missing_sets
            )
        except native.Unsupported:
            pass  # a value only Python can write: the batch takes the lines below
        else:
            return EncodedTable(table, text, missing_sets, has_deletes, len(winners), several)
    missing_sets = {}
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
        first = NULL if winner.first is None else position_literal(winner.first.parts)
        lines.append(
            f"{copy_line(winner.row, encoders)}\t{escape(key)}\t"
            f"{position_literal(change.position.parts)}\t{change.op.value}\t{uset}\t{gap}\t"
            f"{first}"
        )
    several = any(winner.first is not None for winner in winners.values())
    text = "\n".join(lines) + "\n"
    return EncodedTable(table, text, missing_sets, has_deletes, len(winners), several)


def ledger_lines(changes: Iterable[MappedChange]) -> Iterator[tuple[MappedChange, bool]]:
    """The changes the ledger records, in batch order, and whether each arrived late.

    One line per distinct change id (a transaction may touch a row twice). A change is
    late when its key had a newer position earlier in the batch: the ledger records it
    as superseded, like one that arrives after the newer change was committed. So the
    positions of a key's lines that are not late rise, from its first change's.
    """
    seen: set[str] = set()
    newest: dict[tuple[str, str], tuple[int, ...]] = {}
    for change in changes:
        if change.change_id in seen:
            continue
        seen.add(change.change_id)
        key = (change.target, change.key_text)
        parts = change.position.parts
        before = newest.get(key)
        if before is None or parts > before:
            newest[key] = parts
            yield change, False
        else:
            yield change, True


def superseded_lines(
    changes: Iterable[MappedChange], target: str, doubtful: Mapping[str, list[int] | None]
) -> Iterator[MappedChange]:
    """The changes of `target` that `encode_ledger` recorded `applied` but the key's
    position before the batch, in `doubtful`, makes superseded: all of a key that did
    not advance (None), else those not newer than that position."""
    mine = (change for change in changes if change.target == target)
    for change, late in ledger_lines(mine):
        if late or change.key_text not in doubtful:
            continue
        before = doubtful[change.key_text]
        if before is None or tuple(before) >= change.position.parts:
            yield change


def encode_ledger(changes: list[MappedChange]) -> EncodedLedger:
    """Ledger rows to COPY into the ledger itself, each with the outcome the batch alone
    tells: `superseded` when late (see `ledger_lines`), `applied` otherwise.

    A key's stored position can make some `applied` ones superseded (the key did not
    advance, or held a position at least as new as its first change here); the applier
    corrects those after advancing `key_state`. A change id already in the ledger fails
    the COPY, and the applier writes the batch the careful way (`encode_ledger_stage`).
    This runs once per change on the service's thread: `ledger_lines` is inlined.
    """
    counts: dict[tuple[str, str, str], int] = {}
    if native.ENCODER is not None:
        try:
            text = native.ENCODER.ledger_text(changes, counts)
        except native.Unsupported:
            counts = {}  # a value only Python can write: the batch takes the lines below
        else:
            return EncodedLedger(text, len(changes), counts)
    lines = []
    seen: set[str] = set()
    newest: dict[tuple[str, str], tuple[int, ...]] = {}
    # Table and topic names repeat on every line; each kind has its own cache, as a
    # topic may be named like a source table.
    tables: dict[tuple[str, str], str] = {}
    topics: dict[str, str] = {}
    second_text = _SECOND_TEXT
    for change in changes:
        change_id = change.change_id
        if change_id in seen:
            continue
        seen.add(change_id)
        key = (change.target, change.key_text)
        parts = change.position.parts
        before = newest.get(key)
        if before is None or parts > before:
            newest[key] = parts
            outcome = "applied"
        else:
            outcome = "superseded"
        event = change.decoded.event
        message = change.decoded.message
        assert event is not None
        names = tables.get((event.table, change.target))
        if names is None:
            names = f"{escape(event.table)}\t{escape(change.target)}"
            tables[event.table, change.target] = names
        topic = topics.get(message.topic)
        if topic is None:
            topic = topics[message.topic] = escape(message.topic)
        tx = NULL if event.tx is None else escape(event.tx)
        op = change.op.value
        tally = (change.target, op, outcome)
        counts[tally] = counts.get(tally, 0) + 1
        millis = event.source_ts_ms
        seconds, part = divmod(millis, 1000)
        second = second_text.get(seconds)
        when = f"{second}.{part:03d}+00" if second is not None else source_ts_text(millis)
        lines.append(
            f"{escape(change_id)}\t{names}\t{escape(change.key_text)}\t{op}\t"
            f"{position_literal(parts)}\t{tx}\t{millis}\t{topic}\t{message.partition}\t"
            f"{message.offset}\t{when}\t{outcome}"
        )
    return EncodedLedger("\n".join(lines) + "\n", len(changes), counts)


def encode_ledger_stage(changes: list[MappedChange]) -> str:
    """Ledger lines for the careful way: staged, with their `late` flag, and moved into
    the ledger by `TableStatements.advance`, which skips change ids already there."""
    lines = []
    for change, late in ledger_lines(changes):
        event = change.decoded.event
        message = change.decoded.message
        assert event is not None
        tx = NULL if event.tx is None else escape(event.tx)
        lines.append(
            f"{escape(change.change_id)}\t{escape(event.table)}\t{escape(change.target)}\t"
            f"{escape(change.key_text)}\t{change.op.value}\t"
            f"{position_literal(change.position.parts)}\t{tx}\t{event.source_ts_ms}\t"
            f"{escape(message.topic)}\t{message.partition}\t{message.offset}\t"
            f"{'t' if late else 'f'}"
        )
    return "\n".join(lines) + "\n"


_SECOND_TEXT: dict[int, str] = {}


def source_ts_text(millis: int) -> str:
    """The ledger's `source_ts` for epoch milliseconds, as COPY text in UTC.

    Changes come in bursts from the same seconds: each second is formatted once. A
    value past what Python dates hold (year 9999) becomes text the target rejects, so
    that the change is quarantined with it.
    """
    seconds, millis_part = divmod(millis, 1000)
    text = _SECOND_TEXT.get(seconds)
    if text is None:
        try:
            moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
        except (OverflowError, ValueError, OSError):
            return f"source_ts_ms {millis} is out of range"
        if len(_SECOND_TEXT) >= 4096:
            _SECOND_TEXT.clear()
        # isoformat pads years before 1000 to four digits; strftime's %Y does not here
        text = _SECOND_TEXT[seconds] = moment.replace(tzinfo=None).isoformat(" ")
    return f"{text}.{millis_part:03d}+00"
