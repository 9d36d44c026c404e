"""Retry quarantined messages with the current configuration, through the applier.

The cause of a failure is fixed (a mapping added, a CHECK dropped, a schema registered);
`retry_failures` then takes the rows a `FailureFilter` names, in chunks of `CHUNK` rows
in id order (paged by id, so 100 000 failures never load at once), and per chunk:

1. reads the rows with their raw bytes (`failures.raw_key/raw_value`);
2. decodes the bytes with the CURRENT format and schema registry (`decode_batch`);
3. maps them with the CURRENT mappings (`Applier.prepare_batch`, no database), and reads
   which of the changes' ids the ledger holds already: those are duplicates (P2);
4. writes them in one target transaction (`Applier.write`, the second half of
   `Applier.apply`, with no offsets: the stored offsets stay as they are, P4): rows
   guarded by position, so an old change never overwrites a newer row (P3); ledger rows
   carrying the message's original topic, partition and offset; failures again (their
   row is kept: `ON CONFLICT DO NOTHING`);
5. marks each row in a second transaction: `retried` with its outcome (applied or
   superseded, as the ledger now says; duplicate; skipped for a tombstone), or, still
   failing, the NEW reason and detail, the row staying open (P5).

A crash between 4 and 5 leaves applied rows open: the next retry finds their change ids
in the ledger and marks them retried as duplicates. Nothing is applied twice.

`dry_run=True` runs steps 1-3 against `TargetPreview`, the applier's read-only twin, and
marks nothing. It cannot know what the target's constraints would refuse: a row a CHECK
rejects shows as would-apply.

    >>> which = FailureFilter(reasons=("unmapped",))                    # doctest: +SKIP
    >>> summary = retry_failures(engine, settings, which)               # doctest: +SKIP
    >>> summary.applied, summary.duplicates, summary.failed             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from cdc_recon.apply import failures as fs
from cdc_recon.apply.applier import Applier
from cdc_recon.apply.failures import decode_rows
from cdc_recon.apply.preview import TargetPreview
from cdc_recon.batch import ApplyResult, Failure, Message
from cdc_recon.config import Settings
from cdc_recon.pg.errors import guard
from cdc_recon.pg.sql import change_id_order, quote_ident

CHUNK = 1000  # failure rows per applier batch
SHOWN = 1000  # rows still failing that a summary lists; all keep their new reason
Progress = Callable[[int, int], None]  # (rows done, rows to do)
Coordinates = tuple[str, int, int]
APPLIED, SUPERSEDED, DUPLICATE, SKIPPED = "applied", "superseded", "duplicate", "skipped"


@dataclass
class RetrySummary:
    """What a retry did (or, dry, would do): rows by outcome, and the first rows still
    failing with their new reason."""

    read: int = 0
    applied: int = 0
    superseded: int = 0
    duplicates: int = 0
    skipped: int = 0
    failed: int = 0
    dry_run: bool = False
    failing: list[dict[str, Any]] = field(default_factory=list)

    def add(self, outcomes: dict[int, str]) -> None:
        for outcome in outcomes.values():
            if outcome == APPLIED:
                self.applied += 1
            elif outcome == SUPERSEDED:
                self.superseded += 1
            elif outcome == DUPLICATE:
                self.duplicates += 1
            else:
                self.skipped += 1

    def add_failing(self, row: fs.FailureRow, failure: Failure) -> None:
        self.failed += 1
        if len(self.failing) < SHOWN:
            self.failing.append(
                {
                    "id": row.id,
                    "where": row.where,
                    "reason": failure.reason,
                    "detail": failure.detail,
                }
            )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Target(Protocol):
    dry_run: bool

    def retry(self, rows: Sequence[fs.FailureRow], summary: RetrySummary) -> None: ...


def coordinates(message: Message) -> Coordinates:
    return (message.topic, message.partition, message.offset)


def outcomes_of(
    rows: Sequence[fs.FailureRow],
    changes: dict[Coordinates, str],
    known_before: set[str],
    ledger: dict[str, str],
    failed: dict[Coordinates, Failure],
) -> tuple[dict[int, str], dict[int, Failure]]:
    """Each row's outcome (pure): still failing; a duplicate (its change id was in the
    ledger before, or came earlier in the chunk); applied or superseded as the ledger now
    records it; skipped when it held no change (a tombstone)."""
    done: dict[int, str] = {}
    failing: dict[int, Failure] = {}
    seen: set[str] = set()
    for row in rows:
        where = (row.topic, row.partition, row.offset)
        if where in failed:
            failing[row.id] = failed[where]
            continue
        change_id = changes.get(where)
        if change_id is None:
            done[row.id] = SKIPPED
        elif change_id in known_before or change_id in seen:
            done[row.id] = DUPLICATE
        else:
            done[row.id] = ledger.get(change_id, DUPLICATE)
        if change_id is not None:
            seen.add(change_id)
    return done, failing


def ledger_outcomes(schema: str) -> str:
    return (
        f"SELECT change_id, outcome FROM {quote_ident(schema)}.ledger "
        f"WHERE ({change_id_order('change_id')}, change_id) IN "
        f"(SELECT {change_id_order('i')}, i FROM unnest(CAST(:ids AS text[])) AS i)"
    )


def mark_retried(conn: sa.Connection, schema: str, outcomes: dict[int, str]) -> None:
    """Rows whose retry went through: status `retried`, with the outcome (applied,
    superseded, duplicate, skipped). A row resolved meanwhile stays resolved."""
    if not outcomes:
        return
    items = sorted(outcomes.items())
    conn.execute(
        sa.text(
            f"UPDATE {quote_ident(schema)}.failures f SET status = '{fs.RETRIED}', "
            "retried_at = now(), attempts = f.attempts + 1, retry_outcome = x.outcome "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:outcomes AS text[])) AS x(id, outcome) "
            f"WHERE f.id = x.id AND f.status <> '{fs.RESOLVED}'"
        ),
        {"ids": [i for i, _ in items], "outcomes": [o for _, o in items]},
    )


def mark_failing(
    conn: sa.Connection, schema: str, failing: dict[int, tuple[str, str, str | None]]
) -> None:
    """Rows whose retry failed again: their new reason, detail and (when now known)
    source table; the status stays as it was."""
    if not failing:
        return
    items = sorted(failing.items())
    conn.execute(
        sa.text(
            f"UPDATE {quote_ident(schema)}.failures f SET reason = x.reason, "
            "detail = x.detail, source_table = coalesce(x.source_table, f.source_table), "
            "retried_at = now(), attempts = f.attempts + 1 "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:reasons AS text[]), "
            "CAST(:details AS text[]), CAST(:tables AS text[])) "
            "AS x(id, reason, detail, source_table) WHERE f.id = x.id"
        ),
        {
            "ids": [i for i, _ in items],
            "reasons": [r for _, (r, _, _) in items],
            "details": [d for _, (_, d, _) in items],
            "tables": [t for _, (_, _, t) in items],
        },
    )


class _Apply:
    """Steps 3-5 through the service's applier."""

    dry_run = False

    def __init__(self, engine: sa.Engine, settings: Settings, applier: Applier) -> None:
        self.engine, self.settings, self.applier = engine, settings, applier
        self.schema = settings.control_schema

    def _ledger(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        sql = sa.text(ledger_outcomes(self.schema))

        def read() -> dict[str, str]:
            with self.engine.connect() as conn:
                return {str(c): str(o) for c, o in conn.execute(sql, {"ids": list(ids)})}

        return guard(read)

    def retry(self, rows: Sequence[fs.FailureRow], summary: RetrySummary) -> None:
        items = decode_rows(rows, self.settings)
        batch = self.applier.prepare_batch(items)
        changes = {coordinates(c.decoded.message): c.change_id for c in batch.changes}
        known_before = set(self._ledger(sorted(set(changes.values()))))
        result = self.applier.write(batch, {}, self.settings.group_id)
        failed = {coordinates(f.message): f for f in result.failures}
        ledger = self._ledger(sorted(set(changes.values()) - known_before))
        done, failing = outcomes_of(rows, changes, known_before, ledger, failed)
        with_table = {i: (f.reason, f.detail, f.table) for i, f in failing.items()}

        def mark() -> None:
            with self.engine.begin() as conn:
                mark_retried(conn, self.schema, done)
                mark_failing(conn, self.schema, with_table)

        guard(mark)
        summary.add(done)
        by_id = {row.id: row for row in rows}
        for failure_id, failure in failing.items():
            summary.add_failing(by_id[failure_id], failure)


class _Preview:
    """Steps 2-3 against the applier's read-only twin; marks nothing."""

    dry_run = True

    def __init__(self, settings: Settings, preview: TargetPreview) -> None:
        self.settings, self.preview = settings, preview

    def retry(self, rows: Sequence[fs.FailureRow], summary: RetrySummary) -> None:
        result: ApplyResult = self.preview.apply(decode_rows(rows, self.settings))
        summary.applied += result.applied
        summary.superseded += result.superseded
        summary.duplicates += result.duplicates
        summary.skipped += result.skipped
        by_where = {(r.topic, r.partition, r.offset): r for r in rows}
        for failure in result.failures:
            summary.add_failing(by_where[coordinates(failure.message)], failure)


@contextmanager
def _target(engine: sa.Engine, settings: Settings, dry_run: bool) -> Iterator[_Target]:
    if dry_run:
        yield _Preview(settings, TargetPreview(engine, settings))
        return
    applier = Applier(engine, settings)
    try:
        applier.prepare()
        yield _Apply(engine, settings, applier)
    finally:
        applier.close()


def retry_failures(
    engine: sa.Engine,
    settings: Settings,
    which: fs.FailureFilter,
    *,
    dry_run: bool = False,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> RetrySummary:
    """Retry the rows `which` names (see the module docstring); `progress(done, total)`
    after each chunk. The caller checks the control tables (`require_control_tables`)."""
    schema = settings.control_schema
    total = fs.count_failures(engine, schema, which)
    summary = RetrySummary(dry_run=dry_run)
    report = progress or _quiet
    report(0, total)
    with _target(engine, settings, dry_run) as target:
        after = 0
        while summary.read < total:
            size = min(chunk, total - summary.read)
            rows = guard(functools.partial(_page, engine, schema, which, after, size))
            if not rows:
                break
            target.retry(rows, summary)
            summary.read += len(rows)
            after = rows[-1].id
            report(summary.read, total)
    return summary


def _page(
    engine: sa.Engine, schema: str, which: fs.FailureFilter, after: int, size: int
) -> list[fs.FailureRow]:
    with engine.connect() as conn:
        return fs.failure_page(conn, schema, which, after, size)


def _quiet(done: int, total: int) -> None:
    """Progress is not reported."""
