"""Bad input never stops, stalls or corrupts the stream (issue 13's ten defects, P2 P3 P5).

Each test sends good changes around the hostile ones, on the same keys, through the real
`cdc-recon run`, and checks that the run exits 0 by itself, that every good row is exact
and that every hostile message is in `failures` with its reason. Defect 5 (dead letters
of messages near the size limit) is `test_dead_letters.py`'s.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Database, Services, wait_for
from tests.integration.deployment import Deployment, Deployments
from tests.integration.events import KeyValue, send

pytestmark = pytest.mark.integration

TS_MS = 1_700_000_000_000


class Orders:
    """Debezium messages for `public.orders` (and `public.notes`), with rising positions."""

    def __init__(self) -> None:
        self.lsn = 1000
        self.tx = 500

    def message(
        self,
        after: dict[str, Any] | None,
        key: Any = None,
        *,
        op: str = "c",
        table: str = "orders",
        **source: Any,
    ) -> KeyValue:
        self.lsn += 10
        self.tx += 1
        block = {
            "connector": "postgresql",
            "ts_ms": TS_MS + self.lsn,
            "schema": "public",
            "table": table,
            "txId": self.tx,
            "lsn": self.lsn,
            **source,
        }
        if key is None and after is not None:
            key = {"id": after["id"]}
        value = {"op": op, "source": block, "after": after}
        raw_key = None if key is ... else json.dumps(key).encode()
        return raw_key, json.dumps(value).encode()

    def order(self, id_: int, status: str = "new", **fields: Any) -> KeyValue:
        return self.message({"id": id_, "status": status, "note": None, **fields})


@pytest.fixture
def orders_deploy(deployments: Deployments) -> Callable[..., Deployment]:
    deployments.create(
        "CREATE TABLE {t}.orders (id bigint PRIMARY KEY, status text, amount numeric(12,2), "
        "note text, updated_at timestamptz)"
    )
    deployments.create("CREATE TABLE {t}.notes (code text PRIMARY KEY, body text)")

    def make(**service: Any) -> Deployment:
        return deployments.make(
            "bad",
            format="debezium",
            service={"poll_timeout": 0.2, "retry_initial": 0.1, **service},
            tables=[deployments.mapping("orders"), deployments.mapping("notes", "code")],
        )

    return make


def run_through(deployment: Deployment, services: Services, messages: list[KeyValue]) -> str:
    """Send `messages` (one batch) and run the service until idle; its stderr."""
    send(services.kafka_bootstrap, deployment.config["topics"][0], messages)
    run = deployment.run("run", "--until-idle", "2", timeout=90)
    assert run.process.returncode == 0, f"exit {run.process.returncode}:\n{run.stderr[-3000:]}"
    return run.stderr


def failures(db: Database) -> dict[int, tuple[str, str, str | None]]:
    """offset -> (reason, detail, source_table)"""
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT kafka_offset, reason, detail, source_table FROM {db.table('failures')}"
            )
        ).all()
    return {offset: (reason, detail, table) for offset, reason, detail, table in rows}


def orders(db: Database) -> dict[int, tuple[Any, ...]]:
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id, status, amount, note FROM {db.table('orders')}"))
        return {r[0]: tuple(r[1:]) for r in rows}


def ledger_offsets(db: Database) -> set[int]:
    with db.engine.connect() as conn:
        query = sa.text(f"SELECT kafka_offset FROM {db.table('ledger')}")
        return {int(offset) for offset in conn.execute(query).scalars()}


def test_an_empty_or_toast_only_image_is_quarantined_not_a_crash_loop(
    orders_deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    """Defect 1: `INSERT INTO t () ...` failed every restart."""
    log, deployment = Orders(), orders_deploy()
    placeholder = "__debezium_unavailable_value"
    messages = [
        log.order(2, "first"),
        log.message({}, {"id": 2}, op="u"),
        log.message({"status": placeholder, "note": placeholder}, {"id": 2}, op="u"),
        log.order(3, "third"),
    ]
    run_through(deployment, services, messages)
    assert orders(target_db) == {2: ("first", None, None), 3: ("third", None, None)}
    found = failures(target_db)
    assert sorted(found) == [1, 2]
    assert all(r == "invalid" and "lacks key column 'id'" in d for r, d, _ in found.values())
    assert ledger_offsets(target_db) == {0, 3}
    again = deployment.run("run", "--until-idle", "1", timeout=90)  # nothing left to fail
    assert again.process.returncode == 0, again.stderr


def test_a_nul_or_newline_in_a_table_name_is_stored_and_logged_safely(
    orders_deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    """Defects 2 and 10: a NUL broke the failures INSERT (a crash loop); a newline wrote
    a forged line into the log."""
    log, deployment = Orders(), orders_deploy()
    messages = [
        log.order(1),
        log.message({"id": 1, "status": "x"}, table="orders\u0000"),
        log.message({"id": 1, "status": "y"}, ..., table="orders\nFORGED: all is well"),
        log.message({"id": 1, "status": "z"}, schema="pub\u0000lic"),
        log.order(2),
    ]
    stderr = run_through(deployment, services, messages)
    assert orders(target_db) == {1: ("new", None, None), 2: ("new", None, None)}
    found = failures(target_db)
    assert [found[o][0] for o in (1, 2, 3)] == ["unmapped", "undecodable", "unmapped"]
    assert found[1][2] == "public.orders\\x00" and "\x00" not in found[1][1]
    assert not any(line.startswith("FORGED") for line in stderr.splitlines()), stderr
    assert "orders\\nFORGED" in stderr


def test_two_keys_naming_one_row_in_a_batch_are_not_a_crash_loop(
    orders_deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    """Defect 3: two stage rows for one target row (ON CONFLICT ... a second time)."""
    log, deployment = Orders(), orders_deploy()
    messages = [
        log.message({"id": 2, "status": "two"}),
        log.message({"id": 2, "status": "one"}, {"id": 1}),
    ]
    run_through(deployment, services, messages)
    assert orders(target_db) == {2: ("two", None, None)}
    reason, detail, _ = failures(target_db)[1]
    assert reason == "invalid" and "message key id=1 disagrees" in detail


def test_a_key_too_long_for_the_ledger_index_is_quarantined_not_retried_forever(
    orders_deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    """Defect 4: SQLSTATE 54000 (index row too large) was retried every 30 s."""
    log, deployment = Orders(), orders_deploy()
    messages = [
        log.message({"code": "a", "body": "ok"}, {"code": "a"}, table="notes"),
        log.message({"code": "b" * 3000, "body": "x"}, {"code": "b" * 3000}, table="notes"),
        log.message({"code": "é" * 5000, "body": "x"}, {"code": "é" * 5000}, table="notes"),
        log.message({"code": "c", "body": "ok"}, {"code": "c"}, table="notes"),
    ]
    run_through(deployment, services, messages)
    with target_db.engine.connect() as conn:
        codes = conn.execute(sa.text(f"SELECT code FROM {target_db.table('notes')}")).scalars()
        assert sorted(codes) == ["a", "c"]
    found = failures(target_db)
    assert sorted(found) == [1, 2]
    assert all("too long for the ledger" in detail for _, detail, _ in found.values())


def test_rows_the_target_rejects_are_isolated_and_the_rest_applied(
    orders_deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    """Defect 6: 300 rejected rows among 2,000 were bisected for 292 s. Row by row in one
    statement, each rejected row is quarantined with the target's reason."""
    with target_db.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {target_db.table('orders')} ADD CHECK (amount >= 0)"))
    log, deployment = Orders(), orders_deploy(batch_size=5000)
    messages = [log.order(i, amount=-1 if i % 7 == 3 else i) for i in range(2000)]
    run_through(deployment, services, messages)
    good = {i: ("new", Decimal(i), None) for i in range(2000) if i % 7 != 3}
    assert orders(target_db) == good
    found = failures(target_db)
    assert sorted(found) == [i for i in range(2000) if i % 7 == 3]
    assert {reason for reason, _, _ in found.values()} == {"rejected"}
    assert all("orders_amount_check" in d and "23514" in d for _, d, _ in found.values())
    assert len(ledger_offsets(target_db)) == len(good)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ({"id": 1}, "message key id=1 disagrees"),
        ({"id": "92\u0000"}, "disagrees"),
        ({"id": "92"}, "disagrees"),
        ({}, "lacks key column"),
        ({"ID": 92}, "lacks key column"),
    ],
)
def test_a_message_key_that_disagrees_with_its_image_corrupts_nothing(
    orders_deploy: Callable[..., Deployment],
    services: Services,
    target_db: Database,
    key: dict[str, Any],
    why: str,
) -> None:
    """Defect 7: the key guarded and named one row while the image wrote another."""
    log, deployment = Orders(), orders_deploy()
    messages = [
        log.order(1, "one"),
        log.order(92, "ninety-two"),
        log.message({"id": 92, "status": "hijacked", "note": None}, key, op="u"),
        log.order(1, "one again"),
    ]
    run_through(deployment, services, messages)
    assert orders(target_db) == {1: ("one again", None, None), 92: ("ninety-two", None, None)}
    reason, detail, _ = failures(target_db)[2]
    assert reason == "invalid" and why in detail
    with target_db.engine.connect() as conn:
        keys = conn.execute(sa.text(f"SELECT key_text FROM {target_db.table('key_state')}"))
        assert sorted(keys.scalars()) == ['["1"]', '["92"]']


def test_a_txid_past_32_bits_is_not_a_duplicate_that_writes(
    orders_deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    """Defect 8: txId 4294967297 masked to 1 made a 'duplicate' whose row was written."""
    log, deployment = Orders(), orders_deploy()
    messages = [
        log.message({"id": 5, "status": "first"}, txId=1),
        log.message({"id": 5, "status": "collides"}, op="u", txId=4294967297),
    ]
    run_through(deployment, services, messages)
    assert orders(target_db) == {5: ("first", None, None)}
    reason, detail, _ = failures(target_db)[1]
    assert reason == "undecodable" and "txId 4294967297" in detail


AMOUNT_SCHEMA = {
    "type": "struct",
    "fields": [
        {
            "type": "struct",
            "field": "after",
            "optional": True,
            "fields": [
                {"type": "int64", "field": "id"},
                {
                    "type": "bytes",
                    "field": "amount",
                    "name": "org.apache.kafka.connect.data.Decimal",
                    "parameters": {},
                },
            ],
        }
    ],
}


def _decimal_message(log: Orders, id_: int, value: str, parameters: dict[str, str]) -> KeyValue:
    schema = json.loads(json.dumps(AMOUNT_SCHEMA))
    schema["fields"][0]["fields"][1]["parameters"] = parameters
    key, plain = log.message({"id": id_, "amount": value}, op="u")
    return key, json.dumps({"schema": schema, "payload": json.loads(plain)}).encode()


VALUES_THAT_DO_NOT_FIT = [
    ({"status": {"a": 1}}, "is a dict, not text"),
    ({"status": ["a"]}, "is a list, not text"),
    ({"status": 12345}, "is an int, not text"),
    ({"status": 1.5}, "is a float, not text"),
    ({"status": True}, "is a bool, not text"),
    ({"amount": 12.345}, "more than 2 decimal places"),
    ({"updated_at": "2024-01-01"}, "not an ISO-8601 timestamp"),
    ({"updated_at": "2024-01-01T00:00:00"}, "not an ISO-8601 timestamp"),
    ({"updated_at": "2024-W01-1"}, "not an ISO-8601 timestamp"),
    ({"updated_at": "2024-01-01T00:00:00Z\u0000"}, "not an ISO-8601 timestamp"),
    ({"updated_at": "9999-12-31T23:59:59.999999-14:00"}, "outside years 1-9999"),
    ({"note": "nul\u0000inside"}, "holds a NUL character"),
]
HOSTILE_SOURCES: list[tuple[Callable[[Orders, int], KeyValue], str]] = [
    (lambda log, i: log.message({"id": str(i)}, {"id": str(i)}, op="u"), "not an integer"),
    (lambda log, i: _decimal_message(log, i, "A+g=", {}), "without a scale"),
    (lambda log, i: _decimal_message(log, i, "", {"scale": "2"}), "no bytes"),
    (lambda log, i: _decimal_message(log, i, "A+g=", {"scale": "-2"}), "negative scale"),
    (lambda log, i: _decimal_message(log, i, "A+g=", {"scale": "5"}), "more than 2 decimal"),
    (lambda log, i: _decimal_message(log, i, "A+g=", {"scale": "99999"}), "invalid scale"),
    (lambda log, i: log.message({"id": i}, op="u", txId=-5), "txId -5"),
    (lambda log, i: log.message({"id": i}, op="u", lsn=2**63 - 1), "lsn 9223372036854775807"),
    (
        lambda log, i: log.message(
            {"id": i}, op="u", connector="mysql", db="public", file="b.1", pos=4
        ),
        "mysql change of public.orders, which is mapped for postgresql",
    ),
]


def test_a_value_position_or_source_that_does_not_fit_is_refused_not_coerced(
    orders_deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    """Defect 9: nothing is stored as something it was not (text from objects, numbers
    and booleans; numbers from strings; rounded numerics; decimals of a wrong or missing
    scale; dates without a time or zone), no position a connector never sends is taken
    (an LSN of 2^63-1 froze its key for good), and a MySQL-shaped source named like a
    PostgreSQL table does not write it. Each hostile change follows a good one of its
    key, which must stay as it was."""
    log, deployment = Orders(), orders_deploy()
    messages, expected, why = [], {}, {}
    for i, (after, reason) in enumerate(VALUES_THAT_DO_NOT_FIT):
        messages.append(log.order(i, "kept", amount=5))
        why[len(messages)] = reason
        messages.append(log.message({"id": i, "status": "kept", **after}, {"id": i}, op="u"))
        expected[i] = ("kept", Decimal(5), None)
    for i, (make, reason) in enumerate(HOSTILE_SOURCES, start=100):
        messages.append(log.order(i, "kept", amount=5))
        why[len(messages)] = reason
        messages.append(make(log, i))
        expected[i] = ("kept", Decimal(5), None)
    run_through(deployment, services, messages)
    assert orders(target_db) == expected
    found = failures(target_db)
    assert sorted(found) == sorted(why)
    wrong = {o: found[o][1] for o, reason in why.items() if reason not in found[o][1]}
    assert not wrong, wrong


def test_sigterm_mid_batch_is_honoured_at_once(
    orders_deploy: Callable[..., Deployment], services: Services, target_db: Database
) -> None:
    """Deliverable 3: a stop does not wait for a long batch; the batch is rolled back and
    read again by the next run, exactly once."""
    orders_table = target_db.table("orders")
    with target_db.engine.begin() as conn:  # a target that takes 10 s for the batch
        slow = target_db.table("slow")
        conn.exec_driver_sql(
            f"CREATE FUNCTION {slow}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            f"CREATE TRIGGER slow BEFORE INSERT ON {orders_table} "
            f"FOR EACH ROW EXECUTE FUNCTION {slow}()"
        )
    log, deployment = Orders(), orders_deploy(batch_size=1000)
    send(
        services.kafka_bootstrap, deployment.config["topics"][0], [log.order(i) for i in range(200)]
    )
    instance = deployment.start("run")

    def writing() -> bool:
        with target_db.engine.connect() as conn:
            query = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE query LIKE 'INSERT INTO%orders%' AND state = 'active'"
            )
            return bool(conn.execute(sa.text(query)).scalar_one())

    wait_for(writing, "the service to be writing its batch", timeout=60)
    instance.process.send_signal(signal.SIGTERM)
    assert instance.wait(timeout=5) == 0, instance.stderr
    assert "cancelled the batch being written" in instance.stderr
    assert orders(target_db) == {}
    with target_db.engine.begin() as conn:
        conn.execute(sa.text(f"DROP TRIGGER slow ON {orders_table}"))
    again = deployment.run("run", "--until-idle", "2", timeout=90)
    assert again.process.returncode == 0, again.stderr
    assert len(orders(target_db)) == 200 and len(ledger_offsets(target_db)) == 200
