"""The applier's promises end to end: real Debezium JSON through Kafka into PostgreSQL.

Each test writes hand-built Debezium events (with their Connect schemas) to a topic and
runs the service in-process until it is caught up and idle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from cdc_recon.apply.progress import ServiceStats
from cdc_recon.config import Settings, load_settings
from cdc_recon.control_schema import init_control_schema
from cdc_recon.run import run_service
from tests.conftest import Database, Services
from tests.integration.events import ChangeLog, KeyValue, send

pytestmark = pytest.mark.integration

PLACEHOLDER = "__debezium_unavailable_value"


@pytest.fixture
def pipeline(
    services: Services, target_db: Database, topic_factory: Callable[..., str]
) -> Iterator[Callable[[list[KeyValue]], ServiceStats]]:
    with target_db.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {target_db.table('customers')} "
                "(id int PRIMARY KEY, name text, notes text)"
            )
        )
    settings: Settings = load_settings(
        kafka_bootstrap=services.kafka_bootstrap,
        target_url=services.target_url,
        topics=[topic_factory("apply")],
        dead_letter_topic=topic_factory("dlq"),
        group_id=f"apply-{target_db.schema}",
        control_schema=target_db.schema,
        service={"poll_timeout": 0.2},
        tables=[
            {"source": "public.customers", "target": f"{target_db.schema}.customers", "key": ["id"]}
        ],
    )
    init_control_schema(target_db.engine, settings.control_schema)

    def run(messages: list[KeyValue]) -> ServiceStats:
        send(services.kafka_bootstrap, settings.topics[0], messages)
        return run_service(settings, until_idle=1.0)

    yield run


def rows(db: Database) -> dict[int, tuple[Any, ...]]:
    with db.engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT id, name, notes FROM {db.table('customers')}"))
        return {r[0]: tuple(r) for r in found}


def ledger(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {db.table('ledger')}")).scalar_one())


def test_a_change_delivered_twice_is_applied_once(pipeline: Any, target_db: Database) -> None:
    log = ChangeLog(wrapped=True)
    insert = log.insert({"id": 1, "name": "Ada", "notes": "x"})
    stats = pipeline([insert, insert])
    assert (stats.applied, stats.duplicates) == (1, 1)
    assert ledger(target_db) == 1 and rows(target_db) == {1: (1, "Ada", "x")}


def test_older_event_after_newer_changes_nothing(pipeline: Any, target_db: Database) -> None:
    log = ChangeLog(wrapped=True)
    old = log.insert({"id": 1, "name": "old", "notes": "a"})
    new = log.update({"id": 1, "name": "new", "notes": "b"})
    pipeline([new])
    stats = pipeline([old])  # the older change arrives after the newer one was applied
    assert (stats.applied, stats.superseded) == (0, 1)
    assert rows(target_db) == {1: (1, "new", "b")}


def test_out_of_order_changes_in_one_batch_end_at_the_newest(
    pipeline: Any, target_db: Database
) -> None:
    log = ChangeLog(wrapped=True)
    first = log.insert({"id": 1, "name": "first", "notes": "a"})
    second = log.update({"id": 1, "name": "second", "notes": "b"})
    pipeline([second, first])
    assert rows(target_db) == {1: (1, "second", "b")}


def test_delete_then_late_update_keeps_the_row_deleted(pipeline: Any, target_db: Database) -> None:
    log = ChangeLog(wrapped=True)
    insert = log.insert({"id": 1, "name": "Ada", "notes": None})
    late = log.update({"id": 1, "name": "late", "notes": None})
    delete = log.delete({"id": 1})
    tombstone = log.tombstone({"id": 1})
    first = pipeline([insert, delete, tombstone])
    assert first.skipped == 1 and first.failed == 0, "the tombstone is skipped, not quarantined"
    stats = pipeline([late])
    assert rows(target_db) == {}
    assert (stats.applied, stats.superseded) == (0, 1)


def test_unchanged_toast_placeholder_keeps_the_stored_value(
    pipeline: Any, target_db: Database
) -> None:
    log = ChangeLog(wrapped=True)
    insert = log.insert({"id": 1, "name": "Ada", "notes": "a very large toasted text"})
    toast = log.update({"id": 1, "name": "Ada Lovelace", "notes": PLACEHOLDER})
    pipeline([insert, toast])
    assert rows(target_db) == {1: (1, "Ada Lovelace", "a very large toasted text")}
