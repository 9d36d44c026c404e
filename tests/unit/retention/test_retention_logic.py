"""The retention's pure decisions, its task wiring and its metrics, without services."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from typing import Any

import pytest
from prometheus_client import REGISTRY

from cdc_recon.config import load_settings
from cdc_recon.exceptions import ConfigError, KafkaUnavailable
from cdc_recon.retention import policy, queries
from cdc_recon.retention.metrics import observe_round
from cdc_recon.retention.policy import BUSY, OFF, OK, SLACK, cutoff, delete_retention
from cdc_recon.retention.pruner import PruneRound, PrunerThread, _run_task
from cdc_recon.retention.tasks import (
    TABLE_RULES,
    DeleteOld,
    FunctionTask,
    KeyStateMarkers,
    PruneResult,
    PruneTask,
    default_tasks,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
WEEK_MS = "604800000"
DAY_MS = "86400000"


def topic(
    retention: str = WEEK_MS, segment: str = WEEK_MS, policy_: str = "delete"
) -> dict[str, str]:
    return {"retention.ms": retention, "segment.ms": segment, "cleanup.policy": policy_}


# -- what is old enough ---------------------------------------------------------------


def test_cutoff_is_now_minus_the_retention_and_none_keeps_all() -> None:
    assert cutoff(NOW, 3600.0) == NOW - dt.timedelta(hours=1)
    assert cutoff(NOW, None) is None


def test_a_topic_can_deliver_for_retention_plus_one_segment_plus_slack() -> None:
    horizon = policy.topic_horizon(topic(DAY_MS, "3600000"))
    assert horizon == 86400 + 3600 + SLACK


@pytest.mark.parametrize(
    "config",
    [topic("-1"), topic(policy_="compact"), {"retention.ms": "-1"}],
    ids=["infinite retention", "compacted only", "infinite, no policy given"],
)
def test_a_topic_that_keeps_messages_forever_has_no_horizon(config: dict[str, str]) -> None:
    assert policy.topic_horizon(config) is None


def test_compact_and_delete_honours_retention() -> None:
    assert policy.topic_horizon(topic(DAY_MS, DAY_MS, "compact,delete")) == 2 * 86400 + SLACK


def test_the_default_marker_retention_is_the_longest_topic_horizon() -> None:
    found = delete_retention("topics", {"a": topic(DAY_MS, DAY_MS), "b": topic(), "gone": None})
    assert found.seconds == 14 * 86400 + SLACK
    assert "topic b" in found.reason


def test_one_topic_with_infinite_retention_means_never_prune() -> None:
    found = delete_retention("topics", {"a": topic(DAY_MS), "b": topic("-1")})
    assert found.seconds is None
    assert "b" in found.reason


@pytest.mark.parametrize(
    "topics", [None, {}, {"gone": None}], ids=["kafka silent", "no topics", "topic missing"]
)
def test_an_unknown_topic_retention_keeps_every_marker(topics: Any) -> None:
    assert delete_retention("topics", topics).seconds is None


def test_seconds_and_never_override_the_topics() -> None:
    assert delete_retention(7200.0, None).seconds == 7200.0
    assert delete_retention("never", {"a": topic(DAY_MS)}).seconds is None


# -- settings ---------------------------------------------------------------------------


def test_retention_defaults_are_stated() -> None:
    settings = load_settings()
    assert settings.retention.enabled
    assert settings.retention.interval == 3600.0
    assert settings.retention.lock_timeout == 1.0
    assert settings.retention.failures == 30 * 86400
    assert settings.retention.recon_corrections == 90 * 86400
    assert settings.key_state.delete_retention == "topics"


def test_retention_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_RECON_KEY_STATE__DELETE_RETENTION", "86400")
    assert load_settings().key_state.delete_retention == 86400.0
    monkeypatch.setenv("CDC_RECON_KEY_STATE__DELETE_RETENTION", "0")
    with pytest.raises(ConfigError, match="key_state.delete_retention"):
        load_settings()
    monkeypatch.delenv("CDC_RECON_KEY_STATE__DELETE_RETENTION")
    with pytest.raises(ConfigError, match="retention.sweep_runz"):
        load_settings(retention={"sweep_runz": 1})


def test_null_keeps_a_table_forever() -> None:
    settings = load_settings(retention={"recon_corrections": None})
    assert settings.retention.recon_corrections is None


# -- tasks --------------------------------------------------------------------------------


def no_connection() -> contextlib.AbstractContextManager[Any]:
    raise AssertionError("a task that keeps everything must not connect")


def test_default_tasks_run_referencing_rows_before_what_they_reference() -> None:
    names = [task.name for task in default_tasks(load_settings(), read_topics=dict)]
    assert names[0] == "key_state"
    order = {name: i for i, name in enumerate(names)}
    assert order["recon_corrections"] < order["recon_findings"] < order["recon_runs"]
    assert order["review_queue"] < order["recon_findings"]
    assert order["recon_results"] < order["recon_runs"]
    assert {"failures", "missed_changes", "sweep_runs", "recon_jobs"} <= set(names)


def test_a_null_setting_keeps_the_table_without_touching_it() -> None:
    task = DeleteOld("sweep_runs", queries.SWEEP_RUNS, None, "cdc_recon")
    assert task.run(no_connection, NOW, False).status == OFF


def test_markers_are_kept_when_kafka_does_not_answer() -> None:
    def silent() -> dict[str, Any]:
        raise KafkaUnavailable("no broker")

    delete = DeleteOld("key_state", queries.KEY_STATE, None, "cdc_recon")
    result = KeyStateMarkers(delete, "topics", silent).run(no_connection, NOW, False)
    assert result.status == OFF and "no broker" in result.detail


def test_markers_are_kept_when_a_topic_keeps_messages_forever() -> None:
    delete = DeleteOld("key_state", queries.KEY_STATE, None, "cdc_recon")
    forever = KeyStateMarkers(delete, "topics", lambda: {"t": topic("-1")})
    assert forever.run(no_connection, NOW, False).status == OFF
    never = KeyStateMarkers(delete, "never", lambda: {"t": topic(DAY_MS)})
    assert never.run(no_connection, NOW, False).status == OFF


def test_a_task_that_raises_is_a_failed_result() -> None:
    class Broken:
        name = "broken"

        def run(self, connect: Any, now: dt.datetime, dry_run: bool) -> PruneResult:
            raise ValueError("bad SQL")

    result = _run_task(Broken(), no_connection, NOW, False)
    assert result.status == policy.FAILED and "bad SQL" in result.detail


def test_every_rule_names_its_table_and_a_cutoff() -> None:
    rules = [queries.KEY_STATE] + [rule for rule, _ in TABLE_RULES]
    for rule in rules:
        assert "%(cutoff)s" in rule.condition, rule.table
        statement = queries.delete_old(rule, "s", last=False)
        assert "SKIP LOCKED" in statement and "%(hi)s" in statement
        assert "%(hi)s" not in queries.delete_old(rule, "s", last=True)


# -- metrics and the thread ------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_rounds_count_pruned_rows_per_task_but_dry_runs_do_not() -> None:
    before = sample("cdc_recon_pruned_rows_total", task="failures")
    busy_before = sample("cdc_recon_prune_tasks_total", task="key_state", status=BUSY)
    results = (PruneResult("failures", OK, 7), PruneResult("key_state", BUSY, 2))
    observe_round(PruneRound("ok", True, NOW, results))
    assert sample("cdc_recon_pruned_rows_total", task="failures") == before
    observe_round(PruneRound("ok", False, NOW, results))
    assert sample("cdc_recon_pruned_rows_total", task="failures") == before + 7
    assert sample("cdc_recon_prune_tasks_total", task="key_state", status=BUSY) == busy_before + 1


def test_the_thread_prunes_every_interval_and_survives_errors() -> None:
    calls: list[int] = []
    third = threading.Event()

    def prune(settings: Any, cancel: Any) -> PruneRound:
        calls.append(1)
        if len(calls) >= 3:
            third.set()
        if len(calls) == 1:
            raise RuntimeError("target gone")
        return PruneRound("ok", False, NOW)

    settings = load_settings(retention={"interval": 0.01})
    thread = PrunerThread(settings, prune=prune, first_after=0.0)
    thread.start()
    try:
        assert third.wait(10), f"the pruner ran {len(calls)} rounds in 10 s"
    finally:
        thread.stop()
    assert not thread.is_alive()
    assert thread.errors == 1 and thread.rounds >= 2


def test_the_thread_waits_before_its_first_round_and_stops_meanwhile() -> None:
    ran = threading.Event()

    def prune(settings: Any, cancel: Any) -> PruneRound:
        ran.set()
        return PruneRound("ok", False, NOW)

    thread = PrunerThread(load_settings(), prune=prune, first_after=3600.0)
    thread.start()
    thread.stop(timeout=5)
    assert not thread.is_alive() and not ran.is_set()


def test_a_plain_function_joins_the_round_as_a_task() -> None:
    def maintain(connect: Any, now: dt.datetime, dry_run: bool) -> PruneResult:
        return PruneResult("ledger_partitions", OK, rows=1 if not dry_run else 0, cutoff=now)

    task: PruneTask = FunctionTask("ledger_partitions", maintain)
    assert task.name == "ledger_partitions"
    assert task.run(no_connection, NOW, False) == PruneResult("ledger_partitions", OK, 1, NOW)
