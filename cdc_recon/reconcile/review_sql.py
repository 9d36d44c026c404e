"""SQL of the review queue (`review_queue`): listing, one item, resolution, summary."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from cdc_recon.pg.sql import quote_ident

_ITEM = (
    "q.id, q.finding_id, q.table_name, q.key::text AS key, q.type, q.severity, q.status, "
    "q.action, q.note, q.created_at, q.resolved_at"
)


def list_items(
    engine: sa.Engine, schema: str, status: str | None, limit: int
) -> list[dict[str, Any]]:
    s = quote_ident(schema)
    where = "WHERE q.status = %(status)s" if status else ""
    sql = f"SELECT {_ITEM} FROM {s}.review_queue q {where} ORDER BY q.id LIMIT %(limit)s"
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(sql, {"status": status, "limit": limit}).mappings()
        return [dict(row) for row in rows]


def get_item(engine: sa.Engine, schema: str, item_id: int) -> dict[str, Any] | None:
    s = quote_ident(schema)
    sql = (
        f"SELECT {_ITEM}, q.target_image, f.target_hash, f.detail, f.run_id "
        f"FROM {s}.review_queue q LEFT JOIN {s}.recon_findings f ON f.id = q.finding_id "
        "WHERE q.id = %(id)s"
    )
    with engine.connect() as conn:
        row = conn.exec_driver_sql(sql, {"id": item_id}).mappings().first()
    return dict(row) if row else None


def mark_resolved(
    conn: sa.Connection, schema: str, item_id: int, action: str, note: str | None
) -> bool:
    """Resolves an open item; False when it is not open (resolved already, or absent)."""
    result = conn.exec_driver_sql(
        f"UPDATE {quote_ident(schema)}.review_queue SET status = 'resolved', "
        "action = %(action)s, note = %(note)s, resolved_at = now() "
        "WHERE id = %(id)s AND status = 'open'",
        {"action": action, "note": note, "id": item_id},
    )
    return bool(result.rowcount)


def summary(engine: sa.Engine, schema: str) -> list[tuple[str, str, str, int]]:
    """(type, severity, status, items) for every combination present."""
    sql = (
        f"SELECT type, severity, status, count(*) FROM {quote_ident(schema)}.review_queue "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    with engine.connect() as conn:
        return [(a, b, c, int(n)) for a, b, c, n in conn.exec_driver_sql(sql).all()]
