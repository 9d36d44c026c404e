"""deploy/: alert rules (promtool) and Grafana dashboards name metrics the service exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import cdc_recon.run  # noqa: F401  (registers every metric `cdc-recon run` serves)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
ALERTS = {
    "HighDataInconsistency",
    "DataDriftHigh",
    "ReconciliationJobFailed",
    "AutoCorrectionRateHigh",
    "ConsumerLagHigh",
    "MissedChangesFound",
    "SweeperStalled",
    "QuarantineGrowing",
    "DataIncomplete",
    "OldestUnverifiedChangeOld",
}
# Exported by cdc_recon/reconcile/metrics.py (issue 6), with these exact names.
RECONCILIATION = {
    "reconciliation_inconsistencies_total",
    "data_drift_percentage",
    "reconciliation_duration_seconds_sum",
    "reconciliation_duration_seconds_count",
    "reconciliation_duration_seconds_bucket",
    "reconciliation_auto_corrections_total",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
METRIC = re.compile(r"\b((?:cdc_recon|reconciliation|data_drift)_[a-z_]+)\b")


def exported() -> set[str]:
    names = set(RECONCILIATION)
    for family in REGISTRY.collect():
        if family.name.startswith("cdc_recon_"):
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def test_the_service_exports_what_the_issue_asks() -> None:
    names = exported()
    for name in (
        "cdc_recon_consumer_lag",
        "cdc_recon_events_applied_total",
        "cdc_recon_batch_apply_seconds_bucket",
        "cdc_recon_batch_size_bucket",
        "cdc_recon_ledger_rows",
        "cdc_recon_quarantined_total",
        "cdc_recon_missed_changes_found_total",
        "cdc_recon_missed_changes_replayed_total",
        "cdc_recon_missed_changes_replay_failed_total",
        "cdc_recon_sweep_duration_seconds_bucket",
        "cdc_recon_sweeper_watermark_age_seconds",
    ):
        assert name in names


def rules() -> dict[str, Any]:
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return {r["alert"]: r for group in loaded["groups"] for r in group["rules"]}


def test_alerts_use_exported_metrics() -> None:
    found = rules()
    assert set(found) == ALERTS
    names = exported()
    for alert, rule in found.items():
        used = set(METRIC.findall(rule["expr"]))
        assert used and used <= names, (alert, used - names)
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        message = "promtool is missing: scripts/stack.d/install-test-tools installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )


def test_promtool_checks_the_rules() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_promtool_unit_tests_of_the_rules() -> None:
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    covered = {
        t["alertname"]
        for test in yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
        for t in test["alert_rule_test"]
        if t["exp_alerts"]
    }
    assert covered == ALERTS, "every alert is tested firing"


def dashboards() -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARDS.glob("*.json")}


def test_dashboards_cover_each_topic_with_exported_metrics() -> None:
    found = dashboards()
    for topic in ("lag", "throughput", "missed", "sweeps", "reconciliation"):
        assert f"cdc-recon-{topic}" in found
    uids = [board["uid"] for board in found.values()]
    assert len(uids) == len(set(uids))
    names = exported()
    for name, board in found.items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "prometheus"
            for target in panel["targets"]:
                used = set(METRIC.findall(target["expr"]))
                assert used and used <= names, (name, panel["title"], used - names)


def test_compose_provisions_the_dashboards() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/cdc-recon.yml").read_text()
    )["providers"][0]
    mount = f"./deploy/grafana/dashboards:{provider['options']['path']}:ro"
    assert mount in compose["services"]["grafana"]["volumes"]
    prometheus = compose["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
