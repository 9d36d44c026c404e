"""Non-destructive corrections of a run's checksum findings (promise P6).

    missing   insert the source row               (only if the key is still absent)
    mismatch  update the differing columns        (only if the row still hashes as seen)
    extra     queue for review, or with --delete-extras delete it (same compare-and-set)

The default is a dry run that says what would happen. `apply=True` writes, one target
transaction per `reconcile.correction_batch` corrections: per row, read the before image
`FOR UPDATE`, run the compare-and-set statement, record the before and after images in
`recon_corrections` (status `applied`, or `refused` when the row changed after the
check). `export_sql` writes the same statements, quoted by psycopg2, to a file instead.
New values are read from the source when the correction is made, not when checked.

    >>> summary = correct_run(settings, report.run_id, apply=True)  # doctest: +SKIP
    >>> summary.counts                                                # doctest: +SKIP
    {'insert/applied': 3, 'update/applied': 9, 'review/queued': 1}
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from cdc_recon.config import Settings
from cdc_recon.faults import crash_point
from cdc_recon.pg.raw import raw_connection
from cdc_recon.reconcile import fixes, metrics, store
from cdc_recon.reconcile.model import EXTRA, MISMATCH, MISSING
from cdc_recon.reconcile.segment_sql import reconcile_engine
from cdc_recon.reconcile.tables import TableSpec, configured_tables, resolve_table

Kind = Literal["insert", "update", "delete", "review"]
_KIND: dict[str, Kind] = {MISSING: "insert", MISMATCH: "update", EXTRA: "review"}


@dataclass(frozen=True)
class Correction:
    finding_id: int
    table: str
    kind: Kind
    key: str
    columns: tuple[str, ...] = ()
    target_hash: str | None = None
    severity: str = "medium"

    def describe(self) -> str:
        what = f" set {', '.join(self.columns)}" if self.columns else ""
        return f"{self.kind} {self.table} {self.key}{what}"


@dataclass
class CorrectionSummary:
    mode: str
    corrections: list[Correction] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    exported: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "planned": len(self.corrections),
            "counts": dict(sorted(self.counts.items())),
            "export": str(self.exported) if self.exported else None,
            "first": [c.describe() for c in self.corrections[:20]],
        }


def plan(findings: list[dict[str, Any]], *, delete_extras: bool = False) -> list[Correction]:
    """The correction of each row finding, in finding order (pure)."""
    planned = []
    for f in findings:
        kind = _KIND[f["type"]]
        if kind == "review" and delete_extras:
            kind = "delete"
        planned.append(
            Correction(
                int(f["id"]),
                f["table_name"],
                kind,
                f["key"],
                tuple(f["columns"] or ()),
                f["target_hash"],
                f.get("severity", "medium"),
            )
        )
    return planned


def carried(spec: TableSpec) -> list[tuple[str, str]]:
    """(source, target) names of the columns a correction writes: every source column
    whose mapped name exists in the target."""
    names = spec.target_shape.names
    return [
        (c, spec.target_name(c)) for c in spec.source_shape.names if spec.target_name(c) in names
    ]


def correct_run(
    settings: Settings,
    run_id: int,
    *,
    apply: bool = False,
    delete_extras: bool = False,
    export_sql: Path | None = None,
) -> CorrectionSummary:
    """Plans, and applies or exports, the corrections of run `run_id`'s findings."""
    mode = "export" if export_sql else "apply" if apply else "dry-run"
    summary = CorrectionSummary(mode)
    workers = settings.reconcile.workers
    source = reconcile_engine(settings.source_url or "", name="source", workers=workers)
    target = reconcile_engine(settings.target_url, name="target", workers=workers)
    try:
        schema = settings.control_schema
        found = store.run_findings(target, schema, run_id, (MISSING, EXTRA, MISMATCH))
        summary.corrections = plan(found, delete_extras=delete_extras)
        if mode == "dry-run":
            summary.counts.update(f"{c.kind}/planned" for c in summary.corrections)
            return summary
        entries = {e.source: e for e in configured_tables(settings)}
        lines: list[str] = []
        for table in dict.fromkeys(c.table for c in summary.corrections):
            spec = resolve_table(settings, entries[table], source, target)
            todo = [c for c in summary.corrections if c.table == table]
            images = _source_images(source, spec, todo)
            if export_sql:
                lines += _export(target, spec, todo, images, summary)
            else:
                _apply(target, schema, spec, todo, images, summary, settings)
        if export_sql:
            export_sql.write_text("\n".join(["BEGIN;", *lines, "COMMIT;", ""]), encoding="utf-8")
            summary.exported = export_sql
    finally:
        source.dispose()
        target.dispose()
    return summary


def _source_images(source: sa.Engine, spec: TableSpec, todo: list[Correction]) -> dict[str, str]:
    keys = [c.key for c in todo if c.kind in ("insert", "update")]
    with source.connect() as conn:
        return source_images(conn, spec, keys)


def source_images(conn: sa.Connection, spec: TableSpec, keys: list[str]) -> dict[str, str]:
    """key → the source row's image under target names, in the source's dialect."""
    names = carried(spec)
    side = spec.sides()[0]
    if not spec.across_engines:
        return fixes.source_images(conn, side, keys, names)
    families = spec.pair_families(tuple(s for s, _ in names))
    return fixes.source_images(conn, side, keys, names, spec.source_shape, families)


def _statement(
    spec: TableSpec, correction: Correction, images: dict[str, str]
) -> fixes.Statement | None:
    side = spec.sides()[1]
    key = tuple(json.loads(correction.key))
    if correction.kind == "delete" and correction.target_hash is not None:
        return fixes.delete_row(side, key, correction.target_hash)
    image = images.get(correction.key)
    if image is None:
        return None
    if correction.kind == "insert":
        return fixes.insert_row(side, key, image, [t for _, t in carried(spec)])
    if correction.kind == "update" and correction.target_hash is not None:
        return fixes.update_row(side, key, image, correction.columns, correction.target_hash)
    return None


def _apply(
    target: sa.Engine,
    schema: str,
    spec: TableSpec,
    todo: list[Correction],
    images: dict[str, str],
    summary: CorrectionSummary,
    settings: Settings,
) -> None:
    side = spec.sides()[1]
    size = settings.reconcile.correction_batch
    for start in range(0, len(todo), size):
        with target.begin() as conn:
            for c in todo[start : start + size]:
                before = fixes.before_image(conn, side, tuple(json.loads(c.key)))
                status = _apply_one(conn, schema, spec, c, images, before)
                crash_point("reconcile.correction")
                summary.counts[f"{c.kind}/{status}"] += 1
        for c in todo[start : start + size]:
            if c.kind != "review":
                metrics.corrected(spec.name, c.kind)


def _apply_one(
    conn: sa.Connection,
    schema: str,
    spec: TableSpec,
    c: Correction,
    images: dict[str, str],
    before: Any,
) -> str:
    if c.kind == "review":
        queued = fixes.enqueue_review(
            conn, schema, c.finding_id, spec.name, c.key, EXTRA, c.severity, before
        )
        status = "queued" if queued else "already-queued"
        fixes.record_correction(
            conn, schema, c.finding_id, spec.name, c.key, "review", status, before, before
        )
        return status
    statement = _statement(spec, c, images)
    if statement is None:
        fixes.record_correction(
            conn,
            schema,
            c.finding_id,
            spec.name,
            c.key,
            c.kind,
            "skipped",
            before,
            None,
            "the source row is gone",
        )
        return "skipped"
    after = fixes.execute(conn, statement)
    status = "applied" if after is not None else "refused"
    note = "the target row changed after the check" if after is None else None
    image = None if c.kind == "delete" else after
    fixes.record_correction(
        conn, schema, c.finding_id, spec.name, c.key, c.kind, status, before, image, note
    )
    return status


def _export(
    target: sa.Engine,
    spec: TableSpec,
    todo: list[Correction],
    images: dict[str, str],
    summary: CorrectionSummary,
) -> list[str]:
    lines = [f"-- {spec.name} -> {spec.target}"]
    with raw_connection(target, name="target") as raw, raw.cursor() as cursor:
        for c in todo:
            statement = _statement(spec, c, images) if c.kind != "review" else None
            if statement is None:
                reason = "left for review" if c.kind == "review" else "source row gone"
                lines.append(f"-- {c.kind} {c.key}: {reason}")
                summary.counts[f"{c.kind}/skipped"] += 1
                continue
            lines.append(f"-- finding {c.finding_id}: {c.describe()}")
            lines.append(fixes.render(cursor, statement) + ";")
            summary.counts[f"{c.kind}/exported"] += 1
    return lines
