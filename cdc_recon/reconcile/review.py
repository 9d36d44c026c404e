"""The review queue: extra target rows (and other findings) waiting for a person.

keep-target    the target row is right: resolve, change nothing
apply-source   make the target row what the source holds now: delete it when the
               source has no such key, else update or insert it; compare-and-set
               against the row the check saw, audited like every correction
custom         someone fixed it by hand: resolve with the note

>>> resolve_item(settings, 7, "apply-source", note="stale test row")  # doctest: +SKIP
'deleted public.customers [42]'
"""

from __future__ import annotations

import json
from typing import Any, Literal

import sqlalchemy as sa

from cdc_recon.config import Settings
from cdc_recon.exceptions import ApplyError, UsageError
from cdc_recon.reconcile import fixes, metrics, review_sql, store
from cdc_recon.reconcile.corrections import carried, source_images
from cdc_recon.reconcile.segment_sql import reconcile_engine
from cdc_recon.reconcile.tables import TableSpec, configured_tables, resolve_table

Action = Literal["apply-source", "keep-target", "custom"]
ACTIONS = ("apply-source", "keep-target", "custom")


def _engine(settings: Settings) -> sa.Engine:
    engine = reconcile_engine(settings.target_url, name="target", workers=1)
    store.ensure_reconcile_tables(engine, settings.control_schema)
    return engine


def list_queue(
    settings: Settings, status: str | None = "open", limit: int = 100
) -> list[dict[str, Any]]:
    engine = _engine(settings)
    try:
        return review_sql.list_items(engine, settings.control_schema, status, limit)
    finally:
        engine.dispose()


def show_item(settings: Settings, item_id: int) -> dict[str, Any]:
    engine = _engine(settings)
    try:
        item = review_sql.get_item(engine, settings.control_schema, item_id)
    finally:
        engine.dispose()
    if item is None:
        raise UsageError(f"no review item {item_id}", value=str(item_id))
    return item


def queue_summary(settings: Settings) -> list[tuple[str, str, str, int]]:
    engine = _engine(settings)
    try:
        return review_sql.summary(engine, settings.control_schema)
    finally:
        engine.dispose()


def resolve_item(settings: Settings, item_id: int, action: str, note: str | None = None) -> str:
    """Resolves an open item with `action`; returns what was done."""
    if action not in ACTIONS:
        raise UsageError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})", value=action)
    item = show_item(settings, item_id)
    if item["status"] != "open":
        raise UsageError(f"review item {item_id} is {item['status']} already", value=str(item_id))
    target = _engine(settings)
    try:
        with target.begin() as conn:
            done = "resolved"
            if action == "apply-source":
                done = _apply_source(settings, conn, target, item, note)
            if not review_sql.mark_resolved(conn, settings.control_schema, item_id, action, note):
                raise UsageError(f"review item {item_id} is not open", value=str(item_id))
    finally:
        target.dispose()
    return done


def _apply_source(
    settings: Settings,
    conn: sa.Connection,
    target: sa.Engine,
    item: dict[str, Any],
    note: str | None,
) -> str:
    entries = {e.source: e for e in configured_tables(settings)}
    source = reconcile_engine(settings.source_url or "", name="source", workers=1)
    try:
        spec = resolve_table(settings, entries[item["table_name"]], source, target)
        with source.connect() as s:
            images = source_images(s, spec, [item["key"]])
    finally:
        source.dispose()
    side = spec.sides()[1]
    key = tuple(json.loads(item["key"]))
    before = fixes.before_image(conn, side, key)
    kind, statement = _statement(spec, side, key, images.get(item["key"]), before, item)
    after = fixes.execute(conn, statement) if statement else None
    if statement is not None and after is None:
        raise ApplyError(
            f"refused: {spec.target} {item['key']} changed after the check; reconcile again",
            table=spec.target,
        )
    fixes.record_correction(
        conn,
        settings.control_schema,
        item["finding_id"],
        spec.name,
        item["key"],
        f"review:{kind}",
        "applied",
        before,
        None if kind == "delete" else after,
        note,
    )
    metrics.corrected(spec.name, kind)
    return f"{kind} {spec.target} {item['key']}"


def _statement(
    spec: TableSpec,
    side: Any,
    key: tuple[Any, ...],
    image: Any,
    before: Any,
    item: dict[str, Any],
) -> tuple[str, fixes.Statement | None]:
    seen = item.get("target_hash")
    if image is None:
        if before is None or seen is None:
            return "nothing", None
        return "delete", fixes.delete_row(side, key, seen)
    names = [t for _, t in carried(spec)]
    if before is None:
        return "insert", fixes.insert_row(side, key, image, names)
    if seen is None:
        return "nothing", None
    return "update", fixes.update_row(side, key, image, names, seen)
