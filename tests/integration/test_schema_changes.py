"""Source schema changes through the real service (`on_new_column`, a dropped column)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Database, Services
from tests.integration.deployment import Deployment, Deployments
from tests.integration.events import KeyValue
from tests.integration.test_bad_input import Orders, failures, run_through

pytestmark = pytest.mark.integration

DECIMAL = "org.apache.kafka.connect.data.Decimal"
FIELDS = [
    {"type": "int64", "optional": False, "field": "id"},
    {"type": "string", "optional": True, "field": "status"},
    {"type": "string", "optional": True, "field": "note"},
]
NEW_FIELDS = [
    {"type": "int32", "optional": True, "field": "loyalty"},
    {"type": "string", "optional": True, "default": "basic", "field": "tier"},
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.time.ZonedTimestamp",
        "field": "joined",
    },
    {
        "type": "bytes",
        "optional": True,
        "name": DECIMAL,
        "parameters": {"scale": "2", "connect.decimal.precision": "8"},
        "field": "credit",
    },
]


def wrapped(
    log: Orders, after: dict[str, Any], fields: list[dict[str, Any]], op: str = "u"
) -> KeyValue:
    """A Debezium message with its Connect schema (`schemas.enable=true`)."""
    key, bare = log.message(after, op=op)
    image = {"type": "struct", "optional": True, "field": "after", "fields": fields}
    schema = {"type": "struct", "fields": [image], "name": "t.Envelope"}
    return key, json.dumps({"schema": schema, "payload": json.loads(bare)}).encode()


@pytest.fixture
def evolving(deployments: Deployments) -> Callable[..., Deployment]:
    deployments.create("CREATE TABLE {t}.orders (id bigint PRIMARY KEY, status text, note text)")

    def make(**mapping: Any) -> Deployment:
        return deployments.make(
            "evolve",
            format="debezium",
            service={"poll_timeout": 0.2, "retry_initial": 0.1},
            tables=[deployments.mapping("orders", **mapping)],
        )

    return make


def columns(db: Database) -> dict[str, tuple[str, str | None]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT attname, format_type(atttypid, atttypmod), pg_get_expr(d.adbin, d.adrelid) "
                "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid "
                "AND d.adnum = a.attnum WHERE attrelid = to_regclass(:t) AND attnum > 0 "
                "AND NOT attisdropped"
            ),
            {"t": db.table("orders")},
        ).all()
    return {name: (kind, default) for name, kind, default in rows}


def orders(db: Database) -> dict[int, dict[str, Any]]:
    with db.engine.connect() as conn:
        conn.execute(sa.text("SET TIME ZONE 'UTC'"))
        result = conn.execute(sa.text(f"SELECT * FROM {db.table('orders')} ORDER BY id"))
        return {row["id"]: dict(row) for row in result.mappings()}


def test_a_new_source_column_is_added_to_the_target_with_its_type_and_default(
    evolving: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    log, deployment = Orders(), evolving()
    before = [
        wrapped(log, {"id": i, "status": "old", "note": None}, FIELDS, op="c") for i in (1, 3)
    ]
    new_image = {"loyalty": 3, "tier": "gold", "joined": "2024-01-01T10:00:00Z", "credit": "Ajo="}
    after = [
        wrapped(log, {"id": 1, "status": "new", "note": None, **new_image}, FIELDS + NEW_FIELDS),
        wrapped(
            log, {"id": 2, "status": "new", "note": "x", **new_image}, FIELDS + NEW_FIELDS, op="c"
        ),
    ]
    stderr = run_through(deployment, services, before + after)
    assert failures(target_db) == {}
    assert columns(target_db) == {
        "id": ("bigint", None),
        "status": ("text", None),
        "note": ("text", None),
        "loyalty": ("integer", None),
        "tier": ("text", "'basic'::text"),
        "joined": ("timestamp with time zone", None),
        "credit": ("numeric(8,2)", None),
    }
    rows = orders(target_db)
    assert (
        rows[1]["loyalty"] == 3 and rows[1]["tier"] == "gold" and str(rows[1]["credit"]) == "5.70"
    )
    assert rows[1]["joined"].isoformat() == "2024-01-01T10:00:00+00:00"
    assert rows[3]["tier"] == "basic" and rows[3]["loyalty"] is None  # untouched: the default
    assert stderr.count("added column") == 4


def test_ignore_and_quarantine_leave_the_target_as_it_is(
    evolving: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    log = Orders()
    messages = [
        wrapped(log, {"id": 1, "status": "a", "note": None, "loyalty": 1}, FIELDS + NEW_FIELDS[:1])
    ]
    stderr = run_through(evolving(on_new_column="ignore"), services, messages * 2)
    assert set(columns(target_db)) == {"id", "status", "note"}
    assert orders(target_db)[1]["status"] == "a" and failures(target_db) == {}
    assert stderr.count("is not written (on_new_column: ignore)") == 1

    quarantine = evolving(on_new_column="quarantine")
    run_through(
        quarantine,
        services,
        [
            wrapped(
                log,
                {"id": 2, "status": "b", "note": None, "loyalty": 1},
                FIELDS + NEW_FIELDS[:1],
                op="c",
            )
        ],
    )
    assert [reason for reason, _, _ in failures(target_db).values()] == ["unmapped"]
    assert 2 not in orders(target_db)


def test_a_dropped_column_the_target_keeps_not_null_is_rejected_with_what_to_do(
    evolving: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    with target_db.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {target_db.table('orders')} SET note = 'n'"))
        conn.execute(
            sa.text(f"ALTER TABLE {target_db.table('orders')} ALTER COLUMN note SET NOT NULL")
        )
    log, deployment = Orders(), evolving()
    fields = FIELDS[:2]  # the source dropped `note`
    messages = [
        wrapped(log, {"id": 1, "status": "kept", "note": "n"}, FIELDS, op="c"),
        wrapped(log, {"id": 1, "status": "updated"}, fields),  # an update: the row keeps its note
        wrapped(log, {"id": 2, "status": "new"}, fields, op="c"),  # a new row cannot have one
    ]
    run_through(deployment, services, messages)
    assert {i: r["status"] for i, r in orders(target_db).items()} == {1: "updated"}
    [(reason, detail, _)] = failures(target_db).values()
    assert reason == "rejected" and "23502" in detail and "drop its NOT NULL" in detail
