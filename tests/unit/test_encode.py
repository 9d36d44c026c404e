"""COPY text for the ledger's source time (`db.encode.source_ts_text`)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from cdc_recon.db.encode import source_ts_text

MAX_MS = int(dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp() * 1000) + 999


def test_milliseconds_are_kept_and_the_zone_is_utc() -> None:
    assert source_ts_text(1_790_000_000_007) == "2026-09-21 14:13:20.007+00"
    assert source_ts_text(0) == "1970-01-01 00:00:00.000+00"
    assert source_ts_text(-1) == "1969-12-31 23:59:59.999+00"


@given(st.integers(min_value=-(10**12), max_value=MAX_MS))
def test_the_text_is_the_same_instant(millis: int) -> None:
    text = source_ts_text(millis)
    parsed = dt.datetime.fromisoformat(text.replace("+00", "+00:00"))
    assert parsed == dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=millis)


def test_a_time_past_year_9999_is_text_the_target_rejects() -> None:
    assert source_ts_text(MAX_MS + 1) == f"source_ts_ms {MAX_MS + 1} is out of range"
