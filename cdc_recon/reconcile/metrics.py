"""Prometheus metrics of reconciliation, in prometheus_client's default registry, so the
service's `/metrics` endpoint serves them with everything else.

    reconciliation_inconsistencies_total{table,type,severity}     findings, by type
    data_drift_percentage{table}                                  differing rows / rows, %
    reconciliation_duration_seconds{job_type}                     per check (histogram)
    reconciliation_auto_corrections_total{table,correction_type}  corrections applied
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from cdc_recon.reconcile.model import CheckResult

INCONSISTENCIES = Counter(
    "reconciliation_inconsistencies_total",
    "Inconsistencies found by reconciliation checks.",
    ("table", "type", "severity"),
)
DRIFT = Gauge(
    "data_drift_percentage",
    "Percentage of rows that differ between source and target at the last check.",
    ("table",),
)
DURATION = Histogram(
    "reconciliation_duration_seconds",
    "Duration of reconciliation checks and jobs.",
    ("job_type",),
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
)
CORRECTIONS = Counter(
    "reconciliation_auto_corrections_total",
    "Corrections applied to the target by reconciliation.",
    ("table", "correction_type"),
)


def observe(result: CheckResult) -> None:
    """Counts one check's findings, its duration and (when it measured it) the drift."""
    for finding in result.findings:
        INCONSISTENCIES.labels(finding.table, finding.type, finding.severity).inc()
    DURATION.labels(result.check).observe(result.seconds)
    drift = result.stats.get("drift_percentage")
    if isinstance(drift, int | float):
        DRIFT.labels(result.table).set(drift)


def corrected(table: str, correction_type: str, count: int = 1) -> None:
    CORRECTIONS.labels(table, correction_type).inc(count)
