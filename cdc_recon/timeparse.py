"""Times as operators type them: ISO-8601, `now`, or relative to now (`-2h`).

Every result is an aware datetime in UTC; an ISO time without a zone is taken as UTC (as
the plain codec does), never as the machine's local time.

    >>> from datetime import datetime, UTC
    >>> now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    >>> parse_time("-90m", now).isoformat()
    '2024-05-01T10:30:00+00:00'
    >>> parse_time("2024-05-01T14:00:00+02:00", now).isoformat()
    '2024-05-01T12:00:00+00:00'
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from cdc_recon.exceptions import UsageError

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_RELATIVE = re.compile(r"-(\d{1,9})([smhdw])")
EXPECTED = (
    "expected ISO-8601 (2024-05-01T12:00:00Z; no zone means UTC), 'now', "
    "or a time before now: -90s, -30m, -2h, -1d, -1w"
)


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_time(text: str, now: datetime) -> datetime:
    """The moment `text` names, as an aware UTC datetime; `UsageError` names a bad value."""
    value = text.strip()
    if value.lower() == "now":
        return as_utc(now)
    relative = _RELATIVE.fullmatch(value)
    if relative:
        amount, unit = int(relative[1]), relative[2]
        try:
            return as_utc(now) - timedelta(**{UNITS[unit]: amount})
        except OverflowError:
            raise UsageError(f"time {text!r} is too far in the past", value=text) from None
    if not value or not value[0].isdigit():
        raise UsageError(f"invalid time {text!r}: {EXPECTED}", value=text)
    try:
        return as_utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        raise UsageError(f"invalid time {text!r}: {EXPECTED}", value=text) from None


def parse_window(start: str, end: str, now: datetime) -> tuple[datetime, datetime]:
    """`[start, end)` parsed with `parse_time`; `UsageError` unless start is before end."""
    first, last = parse_time(start, now), parse_time(end, now)
    if first >= last:
        raise UsageError(
            f"empty time window: from {first.isoformat()} is not before to {last.isoformat()}",
            value=start,
        )
    return first, last


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, as Kafka timestamps count them."""
    return (as_utc(moment) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
