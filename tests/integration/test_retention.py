"""The retention against the real target and broker: what goes, what stays, and locks.

Rows are written with timestamps in the past (or aged with an UPDATE) and pruned by
`prune_once` with the real now. Delete markers are the applier's own (a create and a
delete applied by the real `Applier`), their horizon the real topic's `retention.ms`
read from the broker. Concurrency is real too: a second instance, a transaction holding
a row the pruner wants, and a table lock the pruner must not wait behind.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from cdc_recon.apply.applier import Applier
from cdc_recon.batch import Decoded, Message
from cdc_recon.cli.app import main
from cdc_recon.config import Settings, load_settings
from cdc_recon.control_schema import init_control_schema
from cdc_recon.events import ChangeEvent, Op, SourcePosition, key_text
from cdc_recon.retention.policy import BUSY, OFF, OK
from cdc_recon.retention.pruner import SKIPPED, PruneRound, prune_once
from cdc_recon.retention.status import read_prune_state
from cdc_recon.retention.tasks import PruneResult, default_tasks
from cdc_recon.run import run_service
from tests.conftest import Database, Services

pytestmark = pytest.mark.integration

SOURCE = "public.customers"
HOUR_MS = "3600000"
TEN_MIN_MS = "600000"  # segment.ms: the horizon is 1 h + 10 min + 1 h of slack


def settings_for(services: Services, db: Database, *topics: str, **extra: Any) -> Settings:
    table = {"source": SOURCE, "target": f"{db.schema}.customers", "key": ["id"]}
    return load_settings(
        target_url=db.url,
        kafka_bootstrap=services.kafka_bootstrap,
        control_schema=db.schema,
        topics=list(topics),
        tables=[table],
        **extra,
    )


@pytest.fixture
def target(target_db: Database) -> Database:
    with target_db.engine.begin() as conn:
        conn.execute(
            sa.text(f"CREATE TABLE {target_db.table('customers')} (id int PRIMARY KEY, name text)")
        )
    init_control_schema(target_db.engine, target_db.schema)
    return target_db


@pytest.fixture
def applier(services: Services, target: Database) -> Iterator[Applier]:
    applier = Applier(target.engine, settings_for(services, target))
    applier.prepare()
    yield applier
    applier.close()


_offsets = iter(range(10**9))


def event(key: int, lsn: int, op: Op) -> Decoded:
    after = None if op is Op.DELETE else {"id": key, "name": f"n{key}"}
    change = ChangeEvent(
        table=SOURCE,
        op=op,
        key={"id": key},
        after=after,
        position=SourcePosition((lsn,)),
        source_ts_ms=1_700_000_000_000 + lsn,
        tx=str(lsn),
    )
    return Decoded(Message("t", 0, next(_offsets), b"k", b"v"), change)


def execute(db: Database, sql: str, params: dict[str, Any] | None = None) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text(sql.replace("S.", f'"{db.schema}".')), params or {})


def column(db: Database, sql: str) -> list[Any]:
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text(sql.replace("S.", f'"{db.schema}".'))).scalars())


def markers(applier: Applier, db: Database, keys: range, *, age: str) -> None:
    """Delete markers of `keys`, created and deleted by the applier, aged by `age`."""
    base = keys.start * 100
    batch = [event(k, base + 2 * i, Op.CREATE) for i, k in enumerate(keys)]
    batch += [event(k, base + 2 * i + 1, Op.DELETE) for i, k in enumerate(keys)]
    applier.apply(batch, {}, "g")
    execute(
        db,
        f"UPDATE S.key_state SET updated_at = now() - interval '{age}' WHERE key_text = ANY(:keys)",
        {"keys": [key_text([k]) for k in keys]},
    )


def marker_keys(db: Database) -> list[str]:
    return column(db, "SELECT key_text FROM S.key_state WHERE deleted ORDER BY key_text")


def by_task(pruned: PruneRound) -> dict[str, PruneResult]:
    return {result.task: result for result in pruned.results}


class Gate:
    """A pruning task that waits until opened: holds a round (and its lock) open."""

    name = "gate"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def run(self, connect: Any, now: Any, dry_run: bool) -> PruneResult:
        self.entered.set()
        if not self.opened.wait(30):
            raise TimeoutError("the gate was never opened")
        return PruneResult(self.name, OK)


def in_thread(action: Callable[[], Any]) -> Callable[[float], Any]:
    """Start `action` on a thread; the returned function waits for its result."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = action()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def result(timeout: float) -> Any:
        thread.join(timeout)
        if thread.is_alive():
            pytest.fail(f"still running after {timeout}s")
        if "error" in box:
            raise box["error"]
        return box["value"]

    return result


# -- the delete markers of key_state -----------------------------------------------------


def test_markers_older_than_the_topics_retention_go_and_recent_ones_stay(
    services: Services,
    target: Database,
    applier: Applier,
    topic_factory: Callable[..., str],
) -> None:
    topic = topic_factory("retention", **{"retention.ms": HOUR_MS, "segment.ms": TEN_MIN_MS})
    markers(applier, target, range(1, 4), age="3 hours")  # past 2 h 10 min: go
    markers(applier, target, range(11, 13), age="1 hour")  # within it: stay
    applier.apply([event(21, 5000, Op.CREATE)], {}, "g")  # a live key, old: stays
    execute(
        target,
        "UPDATE S.key_state SET updated_at = now() - interval '5 hours' WHERE NOT deleted",
    )
    assert len(marker_keys(target)) == 5

    pruned = prune_once(settings_for(services, target, topic))

    result = by_task(pruned)["key_state"]
    assert (result.status, result.rows) == (OK, 3), result
    assert f"topic {topic}" in result.detail
    assert marker_keys(target) == sorted(key_text([k]) for k in (11, 12))
    assert column(target, "SELECT count(*) FROM S.key_state WHERE NOT deleted") == [1]

    # A recent marker still guards its key: an older update of it changes nothing (P3).
    late = applier.apply([event(11, 1100 - 1, Op.UPDATE)], {}, "g")
    assert late.superseded == 1
    assert column(target, "SELECT count(*) FROM " + target.table("customers")) == [1]


def test_a_topic_that_keeps_messages_forever_keeps_every_marker(
    services: Services,
    target: Database,
    applier: Applier,
    topic_factory: Callable[..., str],
) -> None:
    short = topic_factory("retention", **{"retention.ms": HOUR_MS, "segment.ms": TEN_MIN_MS})
    forever = topic_factory("retention", **{"retention.ms": "-1"})
    markers(applier, target, range(1, 3), age="30 days")

    pruned = prune_once(settings_for(services, target, short, forever))

    result = by_task(pruned)["key_state"]
    assert result.status == OFF and forever in result.detail, result
    assert len(marker_keys(target)) == 2
    seconds = settings_for(services, target, forever, key_state={"delete_retention": 86400})
    assert by_task(prune_once(seconds))["key_state"].rows == 2
    assert marker_keys(target) == []


# -- the other control tables -----------------------------------------------------------


def old_and_recent_rows(db: Database) -> None:
    """For each table: rows that must go (`old…`) and rows that must stay."""
    execute(
        db,
        "INSERT INTO S.failures (topic, kafka_partition, kafka_offset, reason, detail, status, "
        "created_at, resolved_at, dead_letter) VALUES "
        "('old resolved', 0, 1, 'r', 'd', 'resolved', now() - interval '40 days', "
        "now() - interval '35 days', 'sent'), "
        "('old retried', 0, 2, 'r', 'd', 'retried', now() - interval '40 days', NULL, 'sent'), "
        "('open', 0, 3, 'r', 'd', 'open', now() - interval '400 days', NULL, 'sent'), "
        "('recent', 0, 4, 'r', 'd', 'resolved', now() - interval '40 days', "
        "now() - interval '1 day', 'sent'), "
        "('dead letter pending', 0, 5, 'r', 'd', 'resolved', now() - interval '40 days', "
        "now() - interval '35 days', 'pending')",
    )
    execute(
        db,
        "INSERT INTO S.missed_changes (change_id, adapter, reason, replayable, status, "
        "found_at, replayed_at) VALUES "
        "('old replayed', 'a', 'r', true, 'replayed', now() - interval '40 days', "
        "now() - interval '39 days'), "
        "('pending', 'a', 'r', true, 'pending', now() - interval '400 days', NULL), "
        "('failed', 'a', 'r', true, 'failed', now() - interval '400 days', NULL), "
        "('recent', 'a', 'r', true, 'replayed', now() - interval '40 days', now())",
    )
    execute(
        db,
        "INSERT INTO S.sweep_runs (pipeline, adapter, status, started_at, finished_at) VALUES "
        "('old', 'a', 'ok', now() - interval '31 days', now() - interval '31 days'), "
        "('recent', 'a', 'ok', now() - interval '1 day', now() - interval '1 day')",
    )
    recon_rows(db)


def recon_rows(db: Database) -> None:
    """Runs 1 (old, nothing refers to it), 2 (old; a recent correction and an open review
    keep two findings, so the run stays), 3 (recent)."""
    execute(
        db,
        "INSERT INTO S.recon_runs (id, checks, mode, started_at, finished_at) VALUES "
        "(1, 'c', 'm', now() - interval '40 days', now() - interval '40 days'), "
        "(2, 'c', 'm', now() - interval '40 days', now() - interval '40 days'), "
        "(3, 'c', 'm', now() - interval '1 day', now() - interval '1 day')",
    )
    execute(
        db,
        "INSERT INTO S.recon_results (id, run_id, table_name, check_name, status, findings, "
        "started_at) VALUES (1, 1, 't', 'counts', 'OK', 0, now() - interval '40 days'), "
        "(2, 2, 't', 'checksums', 'OK', 0, now() - interval '40 days'), "
        "(3, 3, 't', 'counts', 'OK', 0, now() - interval '1 day')",
    )
    execute(
        db,
        "INSERT INTO S.recon_findings (id, run_id, table_name, check_name, type, severity, "
        "created_at) VALUES (1, 1, 't', 'c', 'x', 's', now() - interval '40 days'), "
        "(2, 2, 't', 'c', 'x', 's', now() - interval '40 days'), "
        "(3, 2, 't', 'c', 'x', 's', now() - interval '40 days'), "
        "(4, 2, 't', 'c', 'x', 's', now() - interval '40 days')",
    )
    execute(
        db,
        "INSERT INTO S.recon_corrections (finding_id, table_name, key, correction, status, "
        "created_at) VALUES (1, 't', '{}', 'update', 'applied', now() - interval '100 days'), "
        "(2, 't', '{}', 'update', 'applied', now() - interval '10 days')",
    )
    execute(
        db,
        "INSERT INTO S.review_queue (finding_id, table_name, key, type, severity, status, "
        "created_at, resolved_at) VALUES "
        "(3, 't', '{}', 'x', 's', 'open', now() - interval '40 days', NULL), "
        "(4, 't', '{}', 'x', 's', 'resolved', now() - interval '40 days', "
        "now() - interval '35 days')",
    )
    execute(
        db,
        "INSERT INTO S.recon_jobs (job_type, started_at, status) VALUES "
        "('counts', now() - interval '50 days', 'ok'), "
        "('counts', now() - interval '40 days', 'ok'), "
        "('checksums', now() - interval '45 days', 'ok')",
    )


KEPT = {
    "failures": "SELECT topic FROM S.failures ORDER BY topic",
    "missed_changes": "SELECT change_id FROM S.missed_changes ORDER BY change_id",
    "sweep_runs": "SELECT pipeline FROM S.sweep_runs ORDER BY pipeline",
    "recon_corrections": "SELECT finding_id FROM S.recon_corrections ORDER BY 1",
    "review_queue": "SELECT finding_id FROM S.review_queue ORDER BY 1",
    "recon_findings": "SELECT id FROM S.recon_findings ORDER BY 1",
    "recon_results": "SELECT id FROM S.recon_results ORDER BY 1",
    "recon_runs": "SELECT id FROM S.recon_runs ORDER BY 1",
    "recon_jobs": "SELECT extract(day FROM now() - started_at)::int FROM S.recon_jobs ORDER BY 1",
}


def kept(db: Database) -> dict[str, list[Any]]:
    return {table: column(db, sql) for table, sql in KEPT.items()}


def test_old_rows_go_and_recent_open_or_still_referenced_ones_stay(
    services: Services,
    target: Database,
    monkeypatch: pytest.MonkeyPatch,
    topic_factory: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    old_and_recent_rows(target)

    pruned = prune_once(settings_for(services, target, key_state={"delete_retention": "never"}))

    assert pruned.status == OK
    assert kept(target) == {
        "failures": ["dead letter pending", "open", "recent"],
        "missed_changes": ["failed", "pending", "recent"],
        "sweep_runs": ["recent"],
        "recon_corrections": [2],  # 100 days old goes, 10 days stays (90 days kept)
        "review_queue": [3],  # the open one
        "recon_findings": [2, 3],  # 1 lost its correction, 4 its resolved review
        "recon_results": [2, 3],  # the newest checksums result stays (incremental mode)
        "recon_runs": [2, 3],
        "recon_jobs": [40, 45],  # the newest job of each type stays (the scheduler)
    }
    rows = {task: result.rows for task, result in by_task(pruned).items()}
    assert rows == {
        "key_state": 0,
        "failures": 2,
        "missed_changes": 1,
        "sweep_runs": 1,
        "recon_corrections": 1,
        "review_queue": 1,
        "recon_findings": 2,
        "recon_results": 1,
        "recon_runs": 1,
        "recon_jobs": 1,
    }

    # `cdc-recon status` shows what each task pruned last, and when.
    topic = topic_factory("retention")
    for name, value in {
        "CDC_RECON_TARGET_URL": target.url,
        "CDC_RECON_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "CDC_RECON_CONTROL_SCHEMA": target.schema,
        "CDC_RECON_TOPICS": json.dumps([topic]),
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["status", "--json"]) == 0
    shown = {row["task"]: row for row in json.loads(capsys.readouterr().out)["retention"]}
    assert shown["failures"]["last_pruned_rows"] == 2
    assert shown["failures"]["last_pruned_at"] == pruned.now.isoformat()
    assert shown["key_state"]["status"] == OFF and shown["key_state"]["last_pruned_at"] is None


def test_a_dry_run_changes_nothing_and_reports_counts(
    services: Services,
    target: Database,
    applier: Applier,
    topic_factory: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = topic_factory("retention", **{"retention.ms": HOUR_MS, "segment.ms": TEN_MIN_MS})
    old_and_recent_rows(target)
    markers(applier, target, range(1, 4), age="3 hours")
    before = (kept(target), marker_keys(target))
    for name, value in {
        "CDC_RECON_TARGET_URL": target.url,
        "CDC_RECON_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "CDC_RECON_CONTROL_SCHEMA": target.schema,
        "CDC_RECON_TOPICS": json.dumps([topic]),
    }.items():
        monkeypatch.setenv(name, value)

    assert main(["prune", "--once", "--dry-run", "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    counts = {task["task"]: task["rows"] for task in report["tasks"]}
    assert report["dry_run"] is True
    assert counts["key_state"] == 3 and counts["failures"] == 2
    # A dry run counts each table as it is: findings still referenced by a correction
    # or review row that the round would delete first are not counted.
    assert counts["recon_corrections"] == 1 and counts["recon_findings"] == 0
    assert (kept(target), marker_keys(target)) == before
    assert read_prune_state(target.engine, target.schema) == []

    assert main(["prune", "--once", "--json"]) == 0
    done = {task["task"]: task["rows"] for task in json.loads(capsys.readouterr().out)["tasks"]}
    assert done["key_state"] == 3 and done["failures"] == 2
    assert marker_keys(target) == []


# -- one instance at a time, and never in the applier's way ------------------------------


def test_two_instances_never_prune_at_once(services: Services, target: Database) -> None:
    old_and_recent_rows(target)
    settings = settings_for(services, target, key_state={"delete_retention": "never"})
    gate = Gate()
    first = in_thread(lambda: prune_once(settings, tasks=[gate, *default_tasks(settings)]))
    assert gate.entered.wait(30), "the first instance never started its round"

    second = prune_once(settings)

    assert second.status == SKIPPED and second.results == ()
    assert len(kept(target)["sweep_runs"]) == 2, "the second instance pruned"
    gate.opened.set()
    assert by_task(first(30))["sweep_runs"].rows == 1
    assert prune_once(settings).status == OK  # the lock went with the first round


def test_a_row_the_applier_holds_is_skipped_not_waited_for(
    services: Services, target: Database, applier: Applier
) -> None:
    markers(applier, target, range(1, 4), age="3 hours")
    settings = settings_for(services, target, key_state={"delete_retention": 3600})
    held = key_text([1])
    gate = Gate()
    with target.engine.connect() as other:  # another instance's batch, mid-transaction
        other.execute(
            sa.text(
                f"UPDATE {target.table('key_state')} SET position = position WHERE key_text = :k"
            ),
            {"k": held},
        )
        started = time.monotonic()
        round_ = in_thread(lambda: prune_once(settings, tasks=[*default_tasks(settings), gate]))
        assert gate.entered.wait(10), "the pruner did not get past key_state"
        within = time.monotonic() - started

        # The round is still open: the applier re-creates two keys whose markers the
        # pruner just removed, and is not kept waiting.
        write = in_thread(
            lambda: applier.apply([event(2, 9000, Op.CREATE), event(3, 9001, Op.CREATE)], {}, "g")
        )
        assert write(10).applied == 2
        gate.opened.set()
        result = by_task(round_(10))["key_state"]
        other.rollback()

    assert within < 1.5, f"the pruner took {within:.2f}s past a held row"
    assert result.status == BUSY and result.rows == 2, result
    assert "held by other transactions" in result.detail
    assert marker_keys(target) == [held]
    assert by_task(prune_once(settings))["key_state"].rows == 1  # the next round takes it


def test_the_pruner_gives_up_within_a_second_behind_a_table_lock(
    services: Services, target: Database, applier: Applier
) -> None:
    markers(applier, target, range(1, 4), age="3 hours")
    old_and_recent_rows(target)
    settings = settings_for(services, target, key_state={"delete_retention": 3600})
    with target.engine.connect() as other:  # e.g. CREATE INDEX on key_state: SHARE mode
        other.execute(sa.text(f"LOCK TABLE {target.table('key_state')} IN SHARE MODE"))
        started = time.monotonic()
        pruned = in_thread(lambda: prune_once(settings))(30)
        waited = time.monotonic() - started
        other.rollback()

    result = by_task(pruned)["key_state"]
    assert result.status == BUSY and "lock timeout" in result.detail, result
    assert 0.9 < waited < 3.0, f"the round took {waited:.2f}s behind a 1 s lock_timeout"
    assert len(marker_keys(target)) == 3
    assert by_task(pruned)["failures"].rows == 2  # the other tasks still ran
    state = {row["task"]: row for row in read_prune_state(target.engine, target.schema)}
    assert state["key_state"]["status"] == BUSY
    assert by_task(prune_once(settings))["key_state"].rows == 3


def test_cdc_recon_run_prunes_beside_the_loop(
    services: Services, target: Database, topic_factory: Callable[..., str]
) -> None:
    old_and_recent_rows(target)
    topic = topic_factory("retention")
    settings = settings_for(
        services,
        target,
        topic,
        retention={"interval": 0.2},  # the first round follows after one interval
        key_state={"delete_retention": "never"},
    )
    counted = REGISTRY.get_sample_value("cdc_recon_pruned_rows_total", {"task": "sweep_runs"})

    run_service(settings, until_idle=3)

    assert kept(target)["sweep_runs"] == ["recent"]
    state = {row["task"]: row for row in read_prune_state(target.engine, target.schema)}
    assert state["sweep_runs"]["total_rows"] == 1
    after = REGISTRY.get_sample_value("cdc_recon_pruned_rows_total", {"task": "sweep_runs"})
    assert (after or 0) - (counted or 0) == 1
