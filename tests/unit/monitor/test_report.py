"""Report logic without a database: periods, dates, trend classification, the daily table."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_recon.exceptions import UsageError
from cdc_recon.monitor.report import (
    classify,
    daily_report,
    parse_day,
    parse_period,
    slope,
    trend_report,
)

DAY = dt.date(2025, 3, 1)


def test_parse_period_and_day() -> None:
    assert (parse_period("7d"), parse_period("2w"), parse_period("30")) == (7, 14, 30)
    for bad in ("0d", "7x", "", "400d"):
        with pytest.raises(UsageError):
            parse_period(bad)
    assert parse_day("yesterday", DAY) == dt.date(2025, 2, 28)
    assert parse_day("2024-12-31", DAY) == dt.date(2024, 12, 31)
    with pytest.raises(UsageError, match="YYYY-MM-DD"):
        parse_day("31/12/2024", DAY)


@pytest.mark.parametrize(
    ("values", "trend"),
    [
        ([1, 2, 3, 4, 5, 6, 7], "increasing"),
        ([70, 60, 50, 40, 30, 20, 10], "decreasing"),
        ([100, 98, 103, 99, 101, 100, 102], "stable"),
        ([0, 0, 0, 0, 0, 0, 0], "stable"),
        ([0, 0, 0, 0, 0, 0, 3], "increasing"),
        ([5], "stable"),
    ],
)
def test_classify(values: list[int], trend: str) -> None:
    assert classify(values) == trend


@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=30), st.integers(1, 1000))
def test_classify_ignores_scale(values: list[int], factor: int) -> None:
    assert classify(values) == classify([v * factor for v in values])
    assert slope(list(range(len(values)))) == pytest.approx(1.0)


def test_daily_and_trend_reports() -> None:
    counts = {
        (DAY, "public.a"): {"applied": 10, "missed": 1},
        (DAY, "public.b"): {"applied": 5, "failures": 2},
        (DAY - dt.timedelta(days=1), "public.a"): {"applied": 20},
    }
    sweeps = {"runs": 2, "failed": 0, "missed": 1, "replayed": 1, "seconds": 1.5}
    daily = daily_report(counts, DAY, sweeps)
    assert [row["table"] for row in daily["tables"]] == ["public.a", "public.b"]
    assert daily["totals"] == {
        "applied": 15,
        "superseded": 0,
        "failures": 2,
        "missed": 1,
        "replayed": 0,
    }
    trend = trend_report(counts, DAY - dt.timedelta(days=1), 2)
    found = {(t["table"], t["figure"]): t for t in trend["trends"]}
    assert found[("public.a", "applied")]["values"] == [20, 10]
    assert found[("public.a", "applied")]["trend"] == "decreasing"
    assert found[("public.b", "failures")] == {
        "table": "public.b",
        "figure": "failures",
        "values": [0, 2],
        "total": 2,
        "trend": "increasing",
    }
