"""The ledger's partition plan: buckets, names, gaps and what retention drops (pure)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_recon.apply.ledger_plan import (
    LAST,
    Granularity,
    Partition,
    Retention,
    buckets_of,
    gaps,
    partition_name,
)
from cdc_recon.apply.statements import source_ts
from cdc_recon.events import MAX_SOURCE_TS_MS, MIN_SOURCE_TS_MS

UTC = dt.UTC
T = dt.datetime(2026, 12, 4, 13, 30, tzinfo=UTC)
DAY = dt.timedelta(days=1)


def test_buckets_start_at_midnight_monday_or_the_hour() -> None:
    midnight = dt.datetime(2026, 12, 4, tzinfo=UTC)
    assert Granularity.of("day").bucket(T) == (midnight, midnight + DAY)
    week = Granularity.of("week").bucket(T)
    assert week[0] == dt.datetime(2026, 11, 30, tzinfo=UTC) and week[0].weekday() == 0
    assert Granularity.of("hour").bucket(T)[0] == dt.datetime(2026, 12, 4, 13, tzinfo=UTC)
    with pytest.raises(ValueError, match="hour, day or week"):
        Granularity.of("month")


@given(st.integers(MIN_SOURCE_TS_MS, MAX_SOURCE_TS_MS), st.sampled_from(["hour", "day", "week"]))
def test_every_source_time_the_ledger_holds_has_a_bucket(millis: int, size: str) -> None:
    (bucket,) = buckets_of([millis], Granularity.of(size))
    moment = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=millis)
    assert bucket[0] <= moment < bucket[1]
    assert partition_name(bucket[0]).startswith("ledger_p")


def test_the_last_bucket_of_year_9999_ends_where_dates_end() -> None:
    (bucket,) = buckets_of([MAX_SOURCE_TS_MS], Granularity.of("week"))
    assert bucket[1] == LAST


def test_names_carry_the_hour_off_midnight() -> None:
    assert partition_name(dt.datetime(2026, 12, 4, tzinfo=UTC)) == "ledger_p20261204"
    assert partition_name(dt.datetime(2026, 12, 4, 7, tzinfo=UTC)) == "ledger_p20261204_07"
    assert partition_name(dt.datetime(1, 1, 1, tzinfo=UTC)) == "ledger_p00010101"


def test_gaps_fill_only_what_no_partition_covers() -> None:
    day = (T.replace(hour=0, minute=0), T.replace(hour=0, minute=0) + DAY)
    hours = [(day[0] + dt.timedelta(hours=h), day[0] + dt.timedelta(hours=h + 1)) for h in (3, 4)]
    assert gaps(day, hours) == [(day[0], hours[0][0]), (hours[1][1], day[1])]
    assert gaps(day, [day]) == []


def test_retention_never_drops_past_the_sweepers_watermark() -> None:
    now = T
    old = [Partition(f"p{i}", now - (i + 1) * DAY, now - i * DAY) for i in range(12)]
    keep = Retention(7 * DAY, dt.timedelta(seconds=90))
    assert keep.expired(old, now, None) == [], "never swept: nothing goes"
    swept = keep.expired(old, now, now - 9 * DAY + dt.timedelta(minutes=2))
    assert [p.name for p in swept] == ["p11", "p10", "p9"], "oldest first, all swept"
    assert keep.expired(old, now, now - 9 * DAY)[-1].name == "p10", "the sweeper's lookback"
    assert [p.name for p in keep.expired(old, now, now)][-1] == "p7", "and older than 7 days"
    by_age = Retention(7 * DAY, dt.timedelta(seconds=90), drop_unswept=True)
    assert len(by_age.expired(old, now, None)) == 5


def test_the_next_drop_waits_for_the_sweeper() -> None:
    oldest = Partition("p", T - 3 * DAY, T - 2 * DAY)
    keep = Retention(7 * DAY, dt.timedelta(seconds=90))
    assert keep.next_drop([oldest], T, None) == (oldest, None)
    assert keep.next_drop([oldest], T, T) == (oldest, T + 5 * DAY)
    assert keep.next_drop([], T, T) is None


def test_the_careful_ways_source_ts_is_exact_sql() -> None:
    sql = source_ts("m")
    assert "mod(m, 1000)" in sql and "%" not in sql, "psycopg2 would read % as a parameter"
