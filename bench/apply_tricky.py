"""Ten rows of tricky changes, the same for cdc_recon and its peer: who gets them right.

`bench/apply.py` writes these Debezium events (JSON with schemas, PostgreSQL source) in
this order into one partition of a topic of their own, lets each side apply them to a
table of its own, and counts per case the rows that end as the source did:

- **stale update** (ids 1, 2): an insert, an update, then an older update (a smaller
  LSN) delivered after the newer one, as a replay or a redelivery does: the newer stays.
- **late update after delete** (ids 3, 4; 4 with the delete's tombstone): insert, delete,
  then an update older than the delete: the row stays deleted.
- **TOAST placeholder** (ids 5, 6): an update whose unchanged large column Debezium sends
  as `__debezium_unavailable_value`: the stored value stays.
- **duplicate** (ids 7, 8): the newest update delivered twice: applied once.
- **plain** (ids 9, 10): insert then update, for reference.

The last event, id 99, is a sentinel: once it is in a table, everything before it in
the partition was applied there (it is not scored).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa

PLACEHOLDER = "__debezium_unavailable_value"
SENTINEL = 99
CASES = {
    "stale_update": (1, 2),
    "late_update_after_delete": (3, 4),
    "toast_placeholder": (5, 6),
    "duplicate": (7, 8),
    "plain": (9, 10),
}
_ROW_FIELDS = [
    {"type": "int32", "field": "id"},
    {"type": "string", "field": "name", "optional": True},
    {"type": "string", "field": "notes", "optional": True},
]
_ROW = {"type": "struct", "optional": True, "fields": _ROW_FIELDS}
VALUE_SCHEMA = {
    "type": "struct",
    "name": "bench.public.tricky.Envelope",
    "fields": [
        {**_ROW, "field": "before"},
        {**_ROW, "field": "after"},
        {"type": "struct", "field": "source", "fields": []},
        {"type": "string", "field": "op"},
        {"type": "int64", "field": "ts_ms", "optional": True},
    ],
}
KEY_SCHEMA = {"type": "struct", "fields": [{"type": "int32", "field": "id"}]}
TABLE_DDL = "(id int PRIMARY KEY, name text, notes text)"


def _event(op: str, key: int, lsn: int, row: dict[str, Any] | None) -> tuple[bytes, bytes]:
    payload = {
        "before": {"id": key, "name": None, "notes": None} if op == "d" else None,
        "after": row,
        "source": {
            "version": "3.6.1.Final",
            "connector": "postgresql",
            "name": "bench",
            "ts_ms": 1_790_000_000_000 + lsn,
            "db": "source",
            "schema": "public",
            "table": "tricky",
            "txId": 5000 + lsn,
            "lsn": 20_000_000 + lsn,
        },
        "op": op,
        "ts_ms": 1_790_000_000_000 + lsn,
    }
    value = orjson.dumps({"schema": VALUE_SCHEMA, "payload": payload})
    return orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": key}}), value


def _row(key: int, name: str, notes: str) -> dict[str, Any]:
    return {"id": key, "name": name, "notes": notes}


def events() -> Iterator[tuple[bytes, bytes | None]]:
    """(key, value) in delivery order; a None value is a tombstone."""
    for key in CASES["stale_update"]:
        yield _event("c", key, 100 + key, _row(key, "first", "a"))
        yield _event("u", key, 300 + key, _row(key, "newest", "c"))
        yield _event("u", key, 200 + key, _row(key, "stale", "b"))
    for key in CASES["late_update_after_delete"]:
        yield _event("c", key, 100 + key, _row(key, "first", "a"))
        yield _event("d", key, 300 + key, None)
        if key == 4:
            yield _event("d", key, 300 + key, None)[0], None
        yield _event("u", key, 200 + key, _row(key, "late", "b"))
    for key in CASES["toast_placeholder"]:
        yield _event("c", key, 100 + key, _row(key, "first", f"large text {key}"))
        yield _event("u", key, 300 + key, _row(key, "renamed", PLACEHOLDER))
    for key in CASES["duplicate"]:
        yield _event("c", key, 100 + key, _row(key, "first", "a"))
        update = _event("u", key, 300 + key, _row(key, "newest", "b"))
        yield update
        yield update
    for key in CASES["plain"]:
        yield _event("c", key, 100 + key, _row(key, "first", "a"))
        yield _event("u", key, 300 + key, _row(key, "newest", "b"))
    yield _event("c", SENTINEL, 900, _row(SENTINEL, "sentinel", "end"))


def expected() -> dict[int, tuple[str, str] | None]:
    """What the source holds at the end, per scored id (None: no row)."""
    out: dict[int, tuple[str, str] | None] = {}
    for key in CASES["stale_update"] + CASES["duplicate"] + CASES["plain"]:
        out[key] = ("newest", "c" if key in CASES["stale_update"] else "b")
    for key in CASES["late_update_after_delete"]:
        out[key] = None
    for key in CASES["toast_placeholder"]:
        out[key] = ("renamed", f"large text {key}")
    return out


def score(engine: sa.Engine, table: str) -> dict[str, int]:
    """Rows right per case, from the table's final contents."""
    with engine.connect() as conn:
        found = {
            r[0]: (r[1], r[2])
            for r in conn.execute(sa.text(f"SELECT id, name, notes FROM {table}"))
        }
    want = expected()
    return {
        case: sum(1 for key in keys if found.get(key) == want[key]) for case, keys in CASES.items()
    }


def describe(scores: dict[str, int]) -> str:
    total = sum(scores.values())
    cases = sum(len(keys) for keys in CASES.values())
    parts = ", ".join(f"{case} {n}/{len(CASES[case])}" for case, n in scores.items())
    return f"{total}/{cases} rows right ({parts})"
