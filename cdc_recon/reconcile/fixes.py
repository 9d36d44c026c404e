"""Compare-and-set corrections of the target, with their audit images (promise P6).

Every statement changes a row only if it is still as the check saw it:

    insert   the key is still absent                  INSERT ... WHERE NOT EXISTS
    update   the row's hash still equals the check's  UPDATE ... WHERE key AND hash = seen
    delete   likewise                                 DELETE ... WHERE key AND hash = seen

New values travel as one jsonb parameter (the source row as `to_jsonb`, keys renamed to
target columns) and are cast by `jsonb_populate_record(NULL::target, ...)`, so every
column type converts exactly as PostgreSQL would convert it. Each statement returns the
row's new image (`to_jsonb`); the old one is read `FOR UPDATE` first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from cdc_recon.pg.sql import quote_ident
from cdc_recon.reconcile.dialects.base import TableShape
from cdc_recon.reconcile.expressions import KeyValues, Params, SideSql, key_in

Statement = tuple[str, dict[str, Any]]


def source_images(
    conn: sa.Connection,
    side: SideSql,
    keys: Sequence[str],
    names: Sequence[tuple[str, str]],
    shape: TableShape | None = None,
    families: Sequence[str] = (),
) -> dict[str, str]:
    """key JSON text → the source row as jsonb text under target names ((source, target)
    pairs), built in the source database so that no value passes through Python types.

    Across engines (`shape` and each column's family given) the source's dialect writes
    the image: canonical texts, which jsonb_populate_record reads as PostgreSQL reads
    their literals (json embedded as json, bytes as `\\x` hex)."""
    found: dict[str, str] = {}
    values = [side.bound(json.loads(key)) for key in keys]
    for start in range(0, len(values), 1000):
        params = Params()
        if shape is None:
            image = f"({_image(names, params)})::text"
        else:
            pairs = [
                (
                    params.add(t),
                    side.dialect.image_value(side.dialect.quote_ident(s), shape.column(s), f),
                )
                for (s, t), f in zip(names, families, strict=True)
            ]
            image = side.dialect.row_image(pairs)
        where = key_in(side, values[start : start + 1000], params)
        sql = f"SELECT {side.key_json()}, {image} FROM {side.table} WHERE {where}"
        for key, text in conn.exec_driver_sql(sql, params).all():
            found[key if shape is None else json.dumps(json.loads(key), ensure_ascii=False)] = text
    return found


def _image(names: Sequence[tuple[str, str]], params: Params) -> str:
    parts = []
    for start in range(0, len(names), 40):  # jsonb_build_object takes at most 100 arguments
        pairs = [f"{params.add(t)}::text, {quote_ident(s)}" for s, t in names[start : start + 40]]
        parts.append(f"jsonb_build_object({', '.join(pairs)})")
    return " || ".join(parts) or "'{}'::jsonb"


def _where_key(side: SideSql, key: KeyValues, params: Params) -> str:
    return key_in(side, [key], params)


def before_image(conn: sa.Connection, side: SideSql, key: KeyValues) -> Any:
    """The target row (locked until the transaction ends), or None."""
    params = Params()
    sql = (
        f"SELECT to_jsonb(x)::text FROM {side.table} x "
        f"WHERE {_where_key(side, key, params)} FOR UPDATE"
    )
    found = conn.exec_driver_sql(sql, params).scalar()
    return json.loads(found) if found is not None else None


def insert_row(side: SideSql, key: KeyValues, row: str, names: Sequence[str]) -> Statement:
    """Inserts the `names` columns of `row` (jsonb text) if the key is still absent."""
    params = Params()
    columns = ", ".join(quote_ident(c) for c in names)
    image = params.add(row)
    absent = _where_key(side, key, params)
    sql = (
        f"INSERT INTO {side.table} AS x ({columns}) SELECT {columns} FROM "
        f"jsonb_populate_record(NULL::{side.table}, {image}::jsonb) "
        f"WHERE NOT EXISTS (SELECT 1 FROM {side.table} WHERE {absent}) "
        "RETURNING to_jsonb(x)::text"
    )
    return sql, params


def update_row(
    side: SideSql, key: KeyValues, row: str, names: Sequence[str], seen: str
) -> Statement:
    """Sets the `names` columns from `row` (jsonb text) if the row still hashes to `seen`."""
    params = Params()
    columns = ", ".join(quote_ident(c) for c in names)
    image = params.add(row)
    where = _where_key(side, key, params)
    seen_hash = params.add(int(seen))
    sql = (
        f"UPDATE {side.table} AS x SET ({columns}) = (SELECT {columns} FROM "
        f"jsonb_populate_record(NULL::{side.table}, {image}::jsonb)) "
        f"WHERE {where} AND {side.row_hash()} = {seen_hash} RETURNING to_jsonb(x)::text"
    )
    return sql, params


def delete_row(side: SideSql, key: KeyValues, seen: str) -> Statement:
    params = Params()
    where = _where_key(side, key, params)
    seen_hash = params.add(int(seen))
    sql = (
        f"DELETE FROM {side.table} AS x WHERE {where} AND {side.row_hash()} = {seen_hash} "
        "RETURNING to_jsonb(x)::text"
    )
    return sql, params


def execute(conn: sa.Connection, statement: Statement) -> Any:
    """Runs a correction; the row's new image, or None when compare-and-set refused it."""
    found = conn.exec_driver_sql(*statement).scalar()
    return json.loads(found) if found is not None else None


def record_correction(
    conn: sa.Connection,
    schema: str,
    finding_id: int | None,
    table: str,
    key: str,
    correction: str,
    status: str,
    before: Any,
    after: Any,
    note: str | None = None,
) -> None:
    conn.exec_driver_sql(
        f"INSERT INTO {quote_ident(schema)}.recon_corrections (finding_id, table_name, key, "
        "correction, status, before, after, note) VALUES (%(finding)s, %(table)s, %(key)s, "
        "%(correction)s, %(status)s, %(before)s, %(after)s, %(note)s)",
        {
            "finding": finding_id,
            "table": table,
            "key": key,
            "correction": correction,
            "status": status,
            "before": _json(before),
            "after": _json(after),
            "note": note,
        },
    )


def enqueue_review(
    conn: sa.Connection,
    schema: str,
    finding_id: int,
    table: str,
    key: str,
    kind: str,
    severity: str,
    image: Any,
) -> bool:
    """Queues a finding for a person; False when it is queued already."""
    result = conn.exec_driver_sql(
        f"INSERT INTO {quote_ident(schema)}.review_queue (finding_id, table_name, key, type, "
        "severity, target_image) VALUES (%(finding)s, %(table)s, %(key)s, %(type)s, "
        "%(severity)s, %(image)s) ON CONFLICT (finding_id) DO NOTHING",
        {
            "finding": finding_id,
            "table": table,
            "key": key,
            "type": kind,
            "severity": severity,
            "image": _json(image),
        },
    )
    return bool(result.rowcount)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def render(cursor: Any, statement: Statement) -> str:
    """The statement with its parameters quoted as literals by psycopg2 (`mogrify`)."""
    sql, params = statement
    return str(cursor.mogrify(sql, params).decode())
