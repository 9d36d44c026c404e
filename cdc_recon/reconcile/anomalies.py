"""`--check anomalies`: unusual change activity per table, by IsolationForest (the `ml`
extra, scikit-learn).

1. read the ledger of the last `lookback` seconds per target table and time bucket
   (`activity_sql`), idle buckets included (`activity.per_table`);
2. per table, the buckets of the last `recent` seconds are scored by a forest fitted on
   the table's history before them (from its first active bucket; a table with fewer
   than `min_buckets` of history is not scored, and says so);
3. a recent bucket is reported when the forest isolates it AND one of its features lies
   at least `min_deviation` robust standard deviations from the table's typical value:
   the forest finds unusual combinations, the deviation keeps it to what an engineer
   would call unusual, and names the features (`activity.deviations`).

Findings are like any other check's (type `anomaly`, no key), so they are persisted,
counted in `reconciliation_inconsistencies_total` and fail the run; nothing corrects
them. Without scikit-learn, asking for this check is a one-line usage error and `all`
leaves it out.

    >>> results = check_anomalies(ctx)                           # doctest: +SKIP
    >>> results[0].findings[0].detail["deviations"][0]           # doctest: +SKIP
    {'feature': 'delete share', 'value': 0.96, 'typical': 0.05, 'deviation': 61.2}
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from cdc_recon.config.reconcile_settings import AnomalySettings
from cdc_recon.exceptions import UsageError
from cdc_recon.reconcile.activity import IDLE, Vector, deviations, model_vector, per_table
from cdc_recon.reconcile.activity_sql import has_ledger, ledger_activity
from cdc_recon.reconcile.checks import CheckContext
from cdc_recon.reconcile.model import SEVERITY, CheckResult, Finding

INSTALL_HINT = "the anomalies check needs scikit-learn: pip install 'cdc-recon[ml]'"
TREES = 200


def ml_installed() -> bool:
    try:
        import sklearn.ensemble  # type: ignore[import-untyped, import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def require_ml() -> None:
    """`UsageError` with the install hint when scikit-learn is missing."""
    if not ml_installed():
        raise UsageError(INSTALL_HINT, value="anomalies")


def check_anomalies(ctx: CheckContext, only: Sequence[str] = ()) -> list[CheckResult]:
    """One result per table with changes in the window (`only`: source or target names)."""
    config = ctx.settings.reconcile.anomalies
    schema = ctx.settings.control_schema
    with ctx.target.connect() as conn:
        if not has_ledger(conn, schema):
            skipped = {"skipped": f"no ledger in {schema}: nothing applied yet"}
            return [CheckResult.of("ledger", "anomalies", [], stats=skipped)]
        end, rows = ledger_activity(conn, schema, config.lookback, config.bucket, only)
    buckets = math.ceil(config.lookback / config.bucket)
    return [
        table_anomalies(table, vectors, end, config)
        for table, vectors in per_table(rows, buckets).items()
    ]


def table_anomalies(
    table: str, vectors: list[Vector], end: dt.datetime, config: AnomalySettings
) -> CheckResult:
    """Scores the table's recent buckets (the last ones of `vectors`) against its history."""
    recent_count = min(math.ceil(config.recent / config.bucket), len(vectors))
    history, recent = vectors[:-recent_count], vectors[-recent_count:]
    first_active = next((i for i, v in enumerate(history) if v != IDLE), len(history))
    history = history[first_active:]
    stats: dict[str, object] = {
        "history_buckets": len(history),
        "recent_buckets": len(recent),
        "bucket_seconds": config.bucket,
    }
    if len(history) < config.min_buckets:
        stats["skipped"] = f"{len(history)} buckets of history, min_buckets {config.min_buckets}"
        return CheckResult.of(table, "anomalies", [], stats=stats)
    findings = []
    for offset, (vector, (isolated, score)) in enumerate(
        zip(recent, isolation_scores(history, recent, config), strict=True)
    ):
        worst = deviations(vector, history)
        if isolated and worst[0]["deviation"] >= config.min_deviation:
            starts = end - dt.timedelta(seconds=(recent_count - offset) * config.bucket)
            detail = {
                "bucket_start": starts.isoformat(),
                "bucket_seconds": config.bucket,
                "score": round(score, 4),
                "deviations": worst,
            }
            findings.append(
                Finding(table, "anomalies", "anomaly", SEVERITY["anomaly"], detail=detail)
            )
    return CheckResult.of(table, "anomalies", findings, stats=stats)


def isolation_scores(
    history: list[Vector], recent: list[Vector], config: AnomalySettings
) -> list[tuple[bool, float]]:
    """(isolated, decision score: below 0 is an outlier) of each recent bucket."""
    import numpy as np
    from sklearn.ensemble import IsolationForest  # type: ignore[import-untyped, import-not-found, unused-ignore]

    forest = IsolationForest(
        n_estimators=TREES, contamination=config.contamination, random_state=config.seed
    )
    forest.fit(np.array([model_vector(v) for v in history]))
    sample = np.array([model_vector(v) for v in recent])
    isolated = forest.predict(sample) == -1
    scores = forest.decision_function(sample)
    return [(bool(i), float(s)) for i, s in zip(isolated, scores, strict=True)]
