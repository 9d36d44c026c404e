"""The ledger's COPY text: source times, and which lines a stored position supersedes."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from cdc_recon.apply.encode import source_ts_text, superseded_lines
from cdc_recon.apply.mapping import MappedChange
from cdc_recon.batch import Decoded, Message
from cdc_recon.events import ChangeEvent, Op, SourcePosition

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


def change(key: str, position: int) -> MappedChange:
    event = ChangeEvent("s.t", Op.UPDATE, {"id": key}, {"id": key}, SourcePosition((position,)), 1)
    decoded = Decoded(Message("topic", 0, position, None, b""), event)
    return MappedChange(decoded, "t", key, f"s.t:{key}:{position}", event.position, Op.UPDATE, ())


def test_superseded_lines_are_those_not_newer_than_the_stored_position() -> None:
    a5, a7, a6, b3, c10 = (
        change("a", 5),
        change("a", 7),
        change("a", 6),
        change("b", 3),
        change("c", 10),
    )
    other = MappedChange(b3.decoded, "elsewhere", "b", "s.u:b:3", b3.position, Op.UPDATE, ())
    doubtful: dict[str, list[int] | None] = {"a": [6], "b": None}
    found = superseded_lines([a5, a7, a6, b3, other, c10], "t", doubtful)
    # a6 arrived late (already recorded superseded), a7 is newer than 6, c is not in doubt,
    # and the change to the other table is not this table's
    assert list(found) == [a5, b3]
