"""`cdc-recon trace` on real Kafka and PostgreSQL: the story of keys that went every way.

The sweeper test's scenario (trigger change log, Debezium-shaped events, real gaps: a
deleted topic prefix, offsets moved past a range, two poison messages) runs, the sweeper
finds and replays the lost changes, and reconciliation corrects a target row changed
behind the pipeline's back. Then each key's trace must tell exactly that story.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from confluent_kafka.admin import AdminClient

from cdc_recon.cli.app import main
from cdc_recon.events import key_text
from cdc_recon.reconcile.corrections import correct_run
from cdc_recon.reconcile.runner import run_reconcile
from cdc_recon.sweep.sweeper import sweep_once
from cdc_recon.trace.reader import Trace, TraceRequest, find_mapping, trace_key
from tests.conftest import Database, Services
from tests.integration.test_sweeper import Gaps, Scenario, publish_with_gaps

pytestmark = pytest.mark.integration


@pytest.fixture
def scenario(
    services: Services, source_db: Database, target_db: Database, topic_factory: Callable[..., str]
) -> Scenario:
    return Scenario(services, source_db, target_db, topic_factory)


def traced(scenario: Scenario, key: int, **settings: Any) -> Trace:
    config = scenario.settings(**settings)
    now = dt.datetime.now(dt.UTC)
    request = TraceRequest(
        find_mapping(config, scenario.table), (str(key),), now - dt.timedelta(hours=1), now
    )
    return trace_key(config, request)


def of_key(gaps: Gaps, key: int) -> list[str]:
    return [c.change_id for c in gaps.changes if c.key == key]


def test_each_key_tells_its_story(
    scenario: Scenario,
    services: Services,
    kafka_admin: AdminClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    changes = scenario.workload(transactions=70, keys=100, seed=11)
    gaps = publish_with_gaps(scenario, changes, services, kafka_admin)
    run = sweep_once(scenario.settings())
    assert run.status == "ok" and run.replayed == len(gaps.expected_missed()), run

    # A key that never lost anything: each change applied or superseded, from a message.
    lost_keys = {c.key for c in changes if c.change_id in gaps.lost}
    clean = next(c.key for c in changes if c.key not in lost_keys and c.op != "d")
    story = traced(scenario, clean)
    assert [c.change_id for c in story.changes] == of_key(gaps, clean)
    assert all(c.in_changelog and c.messages and c.missed is None for c in story.changes)
    assert {c.outcome for c in story.changes} <= {"applied", "superseded"}
    assert story.changes[-1].outcome == "applied"
    assert story.rows.differing == () and story.rows.as_dict()["equal"]

    # A change the consumer skipped (offsets moved past it): missed, replayed from Kafka.
    missed = next(c for c in changes if c.change_id in gaps.expected_missed())
    story = traced(scenario, missed.key)
    found = {c.change_id: c for c in story.changes}[missed.change_id]
    assert found.missed is not None and found.missed["status"] == "replayed", found
    assert "missed, replayed" in found.verdict

    # The poison messages: quarantined, with their reason, on the change they carried.
    unmapped = changes[gaps.unmapped]
    poison = {c.change_id: c for c in traced(scenario, unmapped.key).changes}
    assert [q["reason"] for q in poison[unmapped.change_id].quarantine] == ["unmapped"]
    assert poison[unmapped.change_id].messages[0].seen_by == "quarantine"
    undecodable = traced(scenario, changes[gaps.undecodable].key)
    quarantined = [c for c in undecodable.changes if c.quarantine]
    assert [q["reason"] for c in quarantined for q in c.quarantine] == ["undecodable"]

    # A target row changed behind the pipeline's back: found, corrected, before/after kept.
    with scenario.target.engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {scenario.target.table('customers')} SET name = 'x' WHERE id = :k"),
            {"k": clean},
        )
    drifted = traced(scenario, clean)
    assert drifted.rows.differing == ("name",)
    assert drifted.rows.source is not None and drifted.rows.target is not None
    assert drifted.rows.target["name"] == "x" != drifted.rows.source["name"]
    settings = scenario.settings()
    report = run_reconcile(settings, checks=["checksums"])
    correct_run(settings, report.run_id, apply=True)
    fixed = traced(scenario, clean)
    assert [f["type"] for f in fixed.findings] == ["mismatch"]
    assert [c["status"] for c in fixed.corrections] == ["applied"], fixed.corrections
    assert fixed.corrections[0]["before"]["name"] == "x"
    assert fixed.corrections[0]["after"]["name"] == drifted.rows.source["name"]
    assert fixed.rows.differing == ()

    # The command line: JSON for scripts, and one clear line for a key nobody knows.
    config = tmp_path / "cdc-recon.yml"
    config.write_text(yaml.safe_dump(json.loads(settings.model_dump_json(exclude_none=True))))
    capsys.readouterr()
    assert main(["-c", str(config), "trace", scenario.table, str(clean), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["known"] and printed["rows"]["equal"] and printed["corrections"]
    assert main(["-c", str(config), "trace", scenario.table, str(clean)]) == 0
    shown = capsys.readouterr().out
    assert "changes, in source order" in shown and "current rows" in shown
    assert main(["-c", str(config), "trace", scenario.table, "100000"]) == 1
    assert "no trace of" in capsys.readouterr().out
    assert not traced(scenario, 100000).known
    assert key_text([clean]) == fixed.request.key_text
