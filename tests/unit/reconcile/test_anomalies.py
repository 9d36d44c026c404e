"""Anomaly features from ledger activity (pure), the forest on synthetic buckets, and the
one-line error without the `ml` extra."""

from __future__ import annotations

import datetime as dt
import math
import random
import sys
from pathlib import Path

import pytest

from cdc_recon.cli.app import main
from cdc_recon.config.reconcile_settings import AnomalySettings
from cdc_recon.exceptions import UsageError
from cdc_recon.reconcile.activity import (
    FEATURES,
    IDLE,
    BucketActivity,
    deviations,
    display,
    model_vector,
    per_table,
)
from cdc_recon.reconcile.anomalies import table_anomalies
from cdc_recon.reconcile.runner import parse_checks

END = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def features(activity: BucketActivity | None) -> dict[str, float]:
    return dict(zip(FEATURES, display(activity), strict=True))


def test_a_bucket_becomes_the_figures_an_engineer_watches() -> None:
    busy = BucketActivity(
        "public.orders",
        5,
        changes=200,
        inserts=50,
        updates=100,
        deletes=50,
        superseded=20,
        keys=40,
        transactions=25,
        lag_p50=1.5,
    )
    assert features(busy) == {
        "changes": 200.0,
        "insert share": 0.25,
        "update share": 0.5,
        "delete share": 0.25,
        "superseded share": 0.1,
        "keys per change": 0.2,
        "changes per tx": 8.0,
        "apply lag p50 s": 1.5,
    }
    logged = dict(zip(FEATURES, model_vector(display(busy)), strict=True))
    assert logged["changes"] == pytest.approx(math.log1p(200))
    assert logged["changes per tx"] == pytest.approx(math.log1p(8))
    assert logged["delete share"] == 0.25  # shares stay as they are


def test_no_transaction_ids_or_lag_and_idle_buckets_are_zeros() -> None:
    plain = BucketActivity("t", 0, changes=4, updates=4, keys=4)
    assert features(plain)["changes per tx"] == 0.0
    assert features(plain)["apply lag p50 s"] == 0.0
    assert display(None) == IDLE == display(BucketActivity("t", 1, changes=0))


def test_per_table_fills_idle_buckets_in_time_order() -> None:
    rows = [
        BucketActivity("b", 2, changes=3, inserts=3, keys=3),
        BucketActivity("a", 0, changes=1, updates=1, keys=1),
        BucketActivity("a", 3, changes=2, deletes=2, keys=1),
    ]
    tables = per_table(rows, 4)
    assert list(tables) == ["a", "b"]
    assert [v[0] for v in tables["a"]] == [1.0, 0.0, 0.0, 2.0]
    assert [v[0] for v in tables["b"]] == [0.0, 0.0, 3.0, 0.0]
    with pytest.raises(ValueError, match="outside"):
        per_table([BucketActivity("a", 4, changes=1)], 4)


def test_activity_values_are_validated() -> None:
    with pytest.raises(ValueError):
        BucketActivity("t", 0, changes=1, inserts=1, deletes=1)
    with pytest.raises(ValueError):
        BucketActivity("t", -1, changes=1)


def usual(rng: random.Random, bucket: int) -> BucketActivity:
    """An hour of a steady table: ~100 changes, mostly updates, single-row transactions."""
    n = rng.randint(90, 110)
    inserts, deletes = rng.randint(8, 12), rng.randint(1, 3)
    return BucketActivity(
        "public.orders",
        bucket,
        changes=n,
        inserts=inserts,
        updates=n - inserts - deletes,
        deletes=deletes,
        keys=n - rng.randint(0, 5),
        transactions=n,
        lag_p50=rng.uniform(0.2, 0.4),
    )


def vectors_with(last: BucketActivity | None, buckets: int = 72) -> list[tuple[float, ...]]:
    rng = random.Random(7)
    rows = [usual(rng, b) for b in range(buckets - 1)]
    if last is not None:
        rows.append(last)
    return per_table(rows, buckets)["public.orders"]


def test_deviations_name_the_features_that_moved() -> None:
    history = vectors_with(None)[:-1]
    purge = BucketActivity("public.orders", 71, changes=3000, deletes=2990, keys=3000)
    top = deviations(display(purge), history)
    assert {d["feature"] for d in top} >= {"delete share", "changes"}
    assert all(d["deviation"] >= 3 for d in top)
    delete = next(d for d in top if d["feature"] == "delete share")
    assert delete["value"] == pytest.approx(0.997) and delete["typical"] < 0.05


def test_the_forest_reports_a_purge_and_not_a_usual_hour() -> None:
    config = AnomalySettings(lookback=72 * 3600.0)
    purge = BucketActivity(
        "public.orders", 71, changes=3000, deletes=2990, keys=3000, transactions=1
    )
    found = table_anomalies("public.orders", vectors_with(purge), END, config)
    assert found.status == "FAIL" and len(found.findings) == 1
    detail = found.findings[0].detail
    assert detail["bucket_start"] == (END - dt.timedelta(hours=1)).isoformat()
    assert detail["score"] < 0
    assert found.findings[0].type == "anomaly" and found.findings[0].key is None

    calm = usual(random.Random(99), 71)
    assert table_anomalies("public.orders", vectors_with(calm), END, config).status == "PASS"


def test_a_table_that_goes_quiet_is_reported() -> None:
    config = AnomalySettings(lookback=72 * 3600.0)
    quiet = table_anomalies("public.orders", vectors_with(None), END, config)
    assert quiet.status == "FAIL"
    assert quiet.findings[0].detail["deviations"][0]["value"] == 0


def test_short_history_is_not_scored() -> None:
    config = AnomalySettings(lookback=72 * 3600.0, min_buckets=24)
    rows = [BucketActivity("t", b, changes=5, updates=5, keys=5) for b in range(60, 72)]
    result = table_anomalies("t", per_table(rows, 72)["t"], END, config)
    assert result.status == "PASS" and result.stats["history_buckets"] == 11
    assert "min_buckets 24" in result.stats["skipped"]


def test_anomaly_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        AnomalySettings(contamination=0.9)
    with pytest.raises(ValueError):
        AnomalySettings(lookback=3600.0, recent=3600.0, bucket=3600.0)
    assert AnomalySettings(contamination=0.05).contamination == 0.05


def without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn: ImportError


def test_all_leaves_anomalies_out_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "anomalies" in parse_checks(["all"])
    without_sklearn(monkeypatch)
    assert "anomalies" not in parse_checks(["all"]) and "checksums" in parse_checks(["all"])
    for asked in (["anomalies"], ["all", "anomalies"]):
        with pytest.raises(UsageError, match=r"cdc-recon\[ml\]"):
            parse_checks(asked)


def test_asking_for_anomalies_without_the_extra_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    without_sklearn(monkeypatch)
    config = tmp_path / "c.yml"
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    config.write_text(f"source_url: {unreachable}\ntarget_url: {unreachable}\n")
    assert main(["-c", str(config), "reconcile", "--check", "anomalies"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "cdc-recon: error: the anomalies check needs scikit-learn: pip install 'cdc-recon[ml]'"
    ]
