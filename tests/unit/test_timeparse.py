from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cdc_recon.exceptions import CdcReconError, UsageError
from cdc_recon.timeparse import epoch_ms, parse_time, parse_window

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        (" NOW ", NOW),
        ("-90s", NOW - timedelta(seconds=90)),
        ("-30m", NOW - timedelta(minutes=30)),
        ("-2h", NOW - timedelta(hours=2)),
        ("-1d", NOW - timedelta(days=1)),
        ("-1w", NOW - timedelta(weeks=1)),
        ("-0s", NOW),
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01 10:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.250-01:30", datetime(2024, 5, 1, 11, 30, 0, 250000, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_parses_iso_now_and_relative_times(text: str, expected: datetime) -> None:
    parsed = parse_time(text, NOW)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text", ["", "yesterday", "-2", "2h", "+2h", "-2y", "-h", "- 2h", "2024-13-01", "-1.5h"]
)
def test_bad_times_are_usage_errors_naming_the_value(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_time(text, NOW)
    assert repr(text) in str(caught.value)
    assert caught.value.value == text
    assert caught.value.exit_code == 2
    assert isinstance(caught.value, CdcReconError)


def test_a_relative_time_too_far_back_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="too far in the past"):
        parse_time("-999999999w", NOW)


def test_naive_now_is_taken_as_utc() -> None:
    assert parse_time("-1h", NOW.replace(tzinfo=None)) == NOW - timedelta(hours=1)


def test_a_window_must_not_be_empty() -> None:
    assert parse_window("-2h", "now", NOW) == (NOW - timedelta(hours=2), NOW)
    with pytest.raises(UsageError, match="empty time window"):
        parse_window("now", "-1h", NOW)
    with pytest.raises(UsageError):
        parse_window("now", "now", NOW)


def test_epoch_ms() -> None:
    assert epoch_ms(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == 1000
    assert epoch_ms(NOW) == 1714564800000


moments = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)


@given(moments)
def test_iso_round_trip_keeps_the_instant(moment: datetime) -> None:
    parsed = parse_time(moment.isoformat(), NOW)
    assert parsed == moment and parsed.tzinfo is UTC


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from("smhdw"))
def test_relative_times_are_before_now_by_exactly_that_much(amount: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assume(amount * seconds < 2000 * 365 * 86400)  # before year 1 is an error, tested above
    assert NOW - parse_time(f"-{amount}{unit}", NOW) == timedelta(seconds=amount * seconds)


@given(st.text(max_size=20))
def test_any_text_parses_or_is_a_usage_error(text: str) -> None:
    try:
        parsed = parse_time(text, NOW)
    except UsageError as exc:
        assert exc.value == text
    else:
        assert parsed.tzinfo is UTC
