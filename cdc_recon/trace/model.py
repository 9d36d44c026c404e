"""The story of one key, put together from its evidence (pure: no database, no Kafka).

The reader (`cdc_recon.trace.reader`) fetches, for one table and key, the rows each
control table and the source's change log hold; `assemble` merges them by change id
into one `Change` per source change, in source order, and `compare_rows` sets the
current source row beside the current target row.

A change's Kafka messages come from every record that names coordinates: the ledger
(the message applied), the quarantine (a message that failed, or was a duplicate on
retry) and the missed-change record (the `kafka_topic` adapter saw it on the topic). A
change that only the change log or a missed-change record without coordinates knows of
was never published, as far as the target can tell.

    >>> found = assemble(evidence)                 # doctest: +SKIP
    >>> [c.verdict for c in found]                 # doctest: +SKIP
    ['applied', 'missed, replayed', 'never published']
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NEVER_PUBLISHED = "never published"


@dataclass(frozen=True)
class KafkaMessage:
    """A message that carried the change, and which record says so."""

    topic: str
    partition: int
    offset: int
    seen_by: str  # ledger | quarantine | missed_changes

    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Evidence:
    """Rows as the reader fetched them (dicts of column -> value), per record kind."""

    ledger: Sequence[Mapping[str, Any]] = ()
    changelog: Sequence[Mapping[str, Any]] = ()
    failures: Sequence[Mapping[str, Any]] = ()  # with `change_id` (decoded) when known
    missed: Sequence[Mapping[str, Any]] = ()


@dataclass
class Change:
    """One source change of the key, and what became of it."""

    change_id: str
    source_ts: dt.datetime | None = None
    tx: str | None = None
    op: str | None = None
    position: list[int] | None = None
    in_changelog: bool = False
    messages: list[KafkaMessage] = field(default_factory=list)
    ledger: dict[str, Any] | None = None  # outcome, applied_at
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    missed: dict[str, Any] | None = None

    @property
    def outcome(self) -> str | None:
        """applied | superseded as the ledger says, duplicate when only a retry found its
        id already applied, else None."""
        if self.ledger is not None:
            return str(self.ledger["outcome"])
        if any(q.get("retry_outcome") == "duplicate" for q in self.quarantine):
            return "duplicate"
        return None

    @property
    def verdict(self) -> str:
        """One phrase for the change: what the evidence adds up to."""
        parts = []
        if self.outcome:
            parts.append(self.outcome)
        if self.quarantine:
            open_ = [q for q in self.quarantine if q.get("status") == "open"]
            parts.append("quarantined (open)" if open_ else "quarantined (closed)")
        if self.missed is not None:
            parts.append(f"missed, {self.missed['status']}")
        if not self.messages:
            parts.append(NEVER_PUBLISHED)
        return ", ".join(parts) or "unknown"

    def sort_key(self) -> tuple[Any, ...]:
        moment = self.source_ts or dt.datetime.max.replace(tzinfo=dt.UTC)
        return (moment, self.position or [], self.change_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "change_id": self.change_id,
            "source_ts": self.source_ts.isoformat() if self.source_ts else None,
            "tx": self.tx,
            "op": self.op,
            "position": self.position,
            "in_changelog": self.in_changelog,
            "messages": [
                {
                    "topic": m.topic,
                    "partition": m.partition,
                    "offset": m.offset,
                    "seen_by": m.seen_by,
                }
                for m in self.messages
            ],
            "published": bool(self.messages),
            "outcome": self.outcome,
            "ledger": _jsonable(self.ledger),
            "quarantine": [_jsonable(q) for q in self.quarantine],
            "missed": _jsonable(self.missed),
            "verdict": self.verdict,
        }


def _jsonable(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}


OPS = {"c": "insert", "r": "snapshot", "u": "update", "d": "delete", "i": "insert"}


def op_name(op: str | None) -> str | None:
    """Debezium's (c, r, u, d) and the change log's (I, U, D) letters as one word."""
    return None if op is None else OPS.get(op.strip().lower(), op)


def assemble(evidence: Evidence) -> list[Change]:
    """One `Change` per change id, in source order (source time, then position)."""
    changes: dict[str, Change] = {}

    def change(change_id: str) -> Change:
        return changes.setdefault(change_id, Change(change_id))

    for row in evidence.changelog:
        c = change(row["change_id"])
        c.in_changelog = True
        _fill(c, row.get("changed_at"), row.get("tx"), row.get("op"), None)
    for row in evidence.ledger:
        c = change(row["change_id"])
        _fill(c, row.get("source_ts"), row.get("tx"), row.get("op"), row.get("position"))
        c.ledger = {"outcome": row["outcome"], "applied_at": row.get("applied_at")}
        _add_message(c, row, "ledger")
    for row in evidence.missed:
        c = change(row["change_id"])
        _fill(c, row.get("changed_at"), row.get("tx"), None, row.get("position"))
        c.missed = {
            k: row.get(k)
            for k in ("reason", "status", "attempts", "last_error", "found_at", "replayed_at")
        }
        _add_message(c, row, "missed_changes")
    for row in evidence.failures:
        # A quarantined message whose change id is unknown (it did not decode) still
        # belongs to the key: it gets a change of its own, named by its coordinates.
        name = row.get("change_id") or f"undecoded:{row['topic']}[{row['kafka_partition']}]"
        c = change(name if row.get("change_id") else f"{name}@{row['kafka_offset']}")
        _fill(c, row.get("source_ts"), row.get("tx"), row.get("op"), row.get("position"))
        c.quarantine.append(
            {
                k: row.get(k)
                for k in ("id", "reason", "detail", "status", "retry_outcome", "note", "created_at")
            }
        )
        _add_message(c, row, "quarantine")
    return sorted(changes.values(), key=Change.sort_key)


def _fill(c: Change, moment: dt.datetime | None, tx: Any, op: str | None, position: Any) -> None:
    """Take what the change lacks; the first record that knows a field wins."""
    c.source_ts = c.source_ts or moment
    c.tx = c.tx or (None if tx is None else str(tx))
    c.op = c.op or op_name(op)
    if c.position is None and position is not None:
        c.position = [int(p) for p in position]


def _add_message(c: Change, row: Mapping[str, Any], seen_by: str) -> None:
    if row.get("topic") is None or row.get("kafka_offset") is None:
        return
    message = KafkaMessage(
        str(row["topic"]), int(row["kafka_partition"]), int(row["kafka_offset"]), seen_by
    )
    if all(m.where() != message.where() for m in c.messages):
        c.messages.append(message)


@dataclass(frozen=True)
class RowComparison:
    """The current source and target rows (None: no such row) by target column name,
    and the columns whose values differ."""

    source: dict[str, Any] | None
    target: dict[str, Any] | None
    differing: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "differing": list(self.differing),
            "equal": not self.differing and (self.source is None) == (self.target is None),
        }


def compare_rows(
    source: Mapping[str, Any] | None,
    target: Mapping[str, Any] | None,
    columns: Iterable[tuple[str, str]],
) -> RowComparison:
    """`columns`: (source name, target name) of every mapped column. The source row is
    shown by target names; a column differs when its JSON values are not equal (a row
    present on one side only differs in every column)."""
    pairs = list(columns)
    shown = None if source is None else {t: source.get(s) for s, t in pairs if s in source}
    kept = None if target is None else dict(target)
    if shown is None and kept is None:
        return RowComparison(None, None, ())
    names = [t for _, t in pairs]
    if shown is None or kept is None:
        return RowComparison(shown, kept, tuple(names))
    differing = tuple(t for t in names if t in kept and shown.get(t) != kept.get(t))
    return RowComparison(shown, kept, differing)
