"""Monitoring settings, the service's metrics and its snapshot, without services."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest

import cdc_recon.run  # noqa: F401  (registers every metric `cdc-recon run` serves)
from cdc_recon.apply import metrics
from cdc_recon.batch import ApplyResult, Failure, FailureReason, Message
from cdc_recon.config import is_loopback, load_settings
from cdc_recon.exceptions import ConfigError
from cdc_recon.kafka.consumer import Watermarks
from cdc_recon.monitor.poller import PollResult, readiness
from cdc_recon.sweep.metrics import observed_sweeps


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_token_required_off_loopback() -> None:
    with pytest.raises(ConfigError, match="monitoring: .*needs a token"):
        load_settings(monitoring={"host": "0.0.0.0"})
    settings = load_settings(monitoring={"host": "0.0.0.0", "token": "abc"})
    assert settings.masked()["monitoring"]["token"] == "***"
    assert "abc" not in repr(settings)
    defaults = load_settings().monitoring
    assert (defaults.enabled, defaults.host, defaults.port) == (True, "127.0.0.1", 9464)


def test_env_sets_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_RECON_MONITORING__PORT", "0")
    assert load_settings().monitoring.port == 0


def _failure(reason: str) -> Failure:
    return Failure(Message("t", 0, 7, None, b"x"), reason, "bad")


def test_batch_applied_counts_by_table_op_and_reason() -> None:
    monitor = metrics.ServiceMonitor(clock=lambda: 1000.0)
    before = {
        "c": value("cdc_recon_events_applied_total", table="unit.t", op="c"),
        "q": value("cdc_recon_quarantined_total", reason=FailureReason.UNMAPPED),
        "dup": value("cdc_recon_messages_total", outcome="duplicate"),
        "n": value("cdc_recon_batch_size_count"),
    }
    result = ApplyResult(applied=5, duplicates=2, failures=[_failure(FailureReason.UNMAPPED)])
    result.applied_by_table = {("unit.t", "c"): 4, ("unit.t", "d"): 1}
    monitor.batch_applied(result, 8)
    assert value("cdc_recon_events_applied_total", table="unit.t", op="c") == before["c"] + 4
    assert value("cdc_recon_quarantined_total", reason="unmapped") == before["q"] + 1
    assert value("cdc_recon_messages_total", outcome="duplicate") == before["dup"] + 2
    assert value("cdc_recon_batch_size_count") == before["n"] + 1
    snapshot = monitor.snapshot()
    assert (snapshot.stats.messages, snapshot.stats.applied, snapshot.last_batch_at) == (
        8,
        5,
        1000.0,
    )
    assert snapshot.stats.failures_by_reason == {"unmapped": 1}


class FakeConsumer:
    def __init__(self, positions: dict[Any, int | None], marks: dict[Any, Watermarks]) -> None:
        self.joined = True
        self._positions = positions
        self._marks = marks

    def positions(self) -> dict[Any, int | None]:
        return dict(self._positions)

    def watermarks(self, partitions: Any, *, cached: bool = False, timeout: float = 10.0) -> Any:
        assert cached, "the service loop must not wait for a broker round trip"
        return {k: m for k, m in self._marks.items() if k in partitions}


def test_refresh_sets_lag_and_forgets_revoked_partitions() -> None:
    now = [100.0]
    monitor = metrics.ServiceMonitor(clock=lambda: now[0])
    consumer = FakeConsumer(
        {("lag.t", 0): 10, ("lag.t", 1): None},
        {("lag.t", 0): Watermarks(0, 25), ("lag.t", 1): Watermarks(5, 9)},
    )
    monitor.refresh(consumer)
    assert value("cdc_recon_consumer_lag", topic="lag.t", partition="0") == 15
    assert value("cdc_recon_consumer_lag", topic="lag.t", partition="1") == 4
    assert monitor.snapshot().total_lag == 19
    consumer._positions = {("lag.t", 0): 25}
    monitor.refresh(consumer)  # rate-limited: nothing changes yet
    assert monitor.snapshot().total_lag == 19
    now[0] += metrics.HISTORY_EVERY
    monitor.refresh(consumer)
    assert value("cdc_recon_consumer_lag", topic="lag.t", partition="0") == 0
    assert (
        REGISTRY.get_sample_value("cdc_recon_consumer_lag", {"topic": "lag.t", "partition": "1"})
        is None
    )
    history = monitor.history()
    assert [h["total_lag"] for h in history] == [19, 0]
    assert history[0]["lag"] == {"lag.t[0]": 15, "lag.t[1]": 4}


def test_readiness_needs_database_kafka_and_partitions() -> None:
    monitor = metrics.ServiceMonitor(clock=lambda: 50.0)
    consumer = FakeConsumer({("r", 0): 1}, {("r", 0): Watermarks(0, 1)})
    monitor.refresh(consumer)
    good = PollResult(None, None, None, at=50.0)
    assert readiness(good, monitor.snapshot(), 51.0, 5.0)["status"] == "ready"
    stale = readiness(good, monitor.snapshot(), 200.0, 5.0)
    assert stale["checks"]["database"] == "stale" and stale["status"] == "not ready"
    down = readiness(PollResult(None, None, "no brokers", 50.0), monitor.snapshot(), 51.0, 5.0)
    assert down["checks"]["kafka"] == "no brokers" and down["status"] == "not ready"
    empty = metrics.ServiceMonitor()
    assert readiness(good, empty.snapshot(), 51.0, 5.0)["checks"]["partitions"] == (
        "not joined the group yet"
    )


class Run:
    def __init__(self, status: str, missed: int, replayed: int, failed: int, run_id: int | None):
        self.status, self.missed, self.replayed = status, missed, replayed
        self.replay_failed, self.run_id, self.seconds = failed, run_id, 2.0


def test_sweeps_are_counted() -> None:
    found = value("cdc_recon_missed_changes_found_total")
    runs = value("cdc_recon_sweep_duration_seconds_count")
    failed = value("cdc_recon_sweeps_total", status="failed")
    observed_sweeps(lambda *a, **k: Run("ok", 3, 2, 1, 7))(None)
    observed_sweeps(lambda *a, **k: Run("skipped (lock)", 0, 0, 0, None))(None)
    assert value("cdc_recon_missed_changes_found_total") == found + 3
    assert value("cdc_recon_sweep_duration_seconds_count") == runs + 1

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("source gone")

    with pytest.raises(RuntimeError):
        observed_sweeps(broken)(None)
    assert value("cdc_recon_sweeps_total", status="failed") == failed + 1


def test_reconciliation_metrics_are_served_beside_the_service_metrics() -> None:
    exposed = generate_latest(REGISTRY).decode()
    for name in (
        "reconciliation_inconsistencies_total",
        "data_drift_percentage",
        "reconciliation_duration_seconds",
        "reconciliation_auto_corrections_total",
    ):
        assert f"# HELP {name} " in exposed, name
