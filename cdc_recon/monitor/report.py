"""Daily reports and trends per table, from the control tables (`cdc-recon report`).

Pure functions over `report_sql.daily_counts`: the day's figures per table, and per table
and figure a trend over N days, classified by the least-squares slope of the daily
values relative to their mean:

    >>> classify([1, 2, 3, 4, 5, 6, 7])
    'increasing'
    >>> classify([5, 5, 4, 5, 5, 6, 5])
    'stable'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdc_recon.exceptions import UsageError

FIGURES = ("applied", "superseded", "failures", "missed", "replayed")
TREND_FIGURES = ("applied", "failures", "missed")
THRESHOLD = 0.2  # change over the period, relative to the mean, that counts as a trend
DailyCounts = dict[tuple[dt.date, str], dict[str, int]]


def parse_period(text: str) -> int:
    """`7d`, `2w` or `14` → days (1..366)."""
    raw = text.strip().lower()
    factor = 7 if raw.endswith("w") else 1
    number = raw.rstrip("dw")
    if not number.isdigit() or not 1 <= int(number) * factor <= 366:
        raise UsageError(f"invalid period {text!r}: expected days like 7d or weeks like 2w")
    return int(number) * factor


def parse_day(text: str, today: dt.date) -> dt.date:
    """`YYYY-MM-DD`, `today` or `yesterday` (UTC)."""
    if text in ("today", "yesterday"):
        return today - dt.timedelta(days=text == "yesterday")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"invalid date {text!r}: expected YYYY-MM-DD") from None


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of `values` over 0, 1, 2, ..."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    den = sum((x - mean_x) ** 2 for x in range(n))
    return num / den


def classify(values: Sequence[float], threshold: float = THRESHOLD) -> str:
    """increasing / decreasing / stable: the fitted change over the period vs the mean."""
    if len(values) < 2:
        return "stable"
    mean = sum(values) / len(values)
    change = slope(values) * (len(values) - 1)
    relative = change / mean if mean > 0 else (1.0 if change > 0 else 0.0)
    if relative > threshold:
        return "increasing"
    if relative < -threshold:
        return "decreasing"
    return "stable"


@dataclass(frozen=True)
class TableTrend:
    table: str
    figure: str
    values: tuple[int, ...]
    trend: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "figure": self.figure,
            "values": list(self.values),
            "total": sum(self.values),
            "trend": self.trend,
        }


def daily_report(counts: DailyCounts, day: dt.date, sweeps: dict[str, Any]) -> dict[str, Any]:
    """One day's figures per table, totals, and the sweeper's runs."""
    tables = sorted(t for d, t in counts if d == day)
    figures = [{f: counts[(day, t)].get(f, 0) for f in FIGURES} for t in tables]
    totals = {f: sum(row[f] for row in figures) for f in FIGURES}
    rows = [{"table": t, **row} for t, row in zip(tables, figures, strict=True)]
    return {"date": day.isoformat(), "tables": rows, "totals": totals, "sweeps": sweeps}


def trends(counts: DailyCounts, start: dt.date, days: int) -> list[TableTrend]:
    """Per table and figure of `TREND_FIGURES`, the daily values and their trend."""
    dates = [start + dt.timedelta(days=i) for i in range(days)]
    found = []
    for table in sorted({t for _, t in counts}):
        for figure in TREND_FIGURES:
            values = tuple(counts.get((d, table), {}).get(figure, 0) for d in dates)
            found.append(TableTrend(table, figure, values, classify(values)))
    return found


def trend_report(counts: DailyCounts, start: dt.date, days: int) -> dict[str, Any]:
    dates = [start + dt.timedelta(days=i) for i in range(days)]
    return {
        "from": start.isoformat(),
        "days": days,
        "dates": [d.isoformat() for d in dates],
        "trends": [t.as_dict() for t in trends(counts, start, days)],
    }
