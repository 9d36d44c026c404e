"""`tables[].datetime_zone`: the zone a source time without a zone is read in when its
target column is timestamptz (a MySQL/MariaDB DATETIME arrives as its wall time)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from cdc_recon.apply.mapping import TableMapper, TargetShape
from cdc_recon.batch import Decoded
from cdc_recon.codecs.messages import Message
from cdc_recon.config import TableMapping
from cdc_recon.events import ChangeEvent, Op, SourcePosition

WALL = dt.datetime(2024, 3, 31, 1, 30)  # no zone: a DATETIME's wall time
SHAPE = TargetShape(
    "public.t",
    ("id", "at", "plain", "zoned"),
    ("id",),
    types=("integer", "timestamp with time zone", "timestamp without time zone",
           "timestamp with time zone"),
)  # fmt: skip


def mapped(zone: str | None, after: dict[str, Any]) -> Any:
    extra = {} if zone is None else {"datetime_zone": zone}
    config = TableMapping(source="db.t", target="public.t", key=("id",), connector="mysql", **extra)
    event = ChangeEvent(
        "db.t", Op.UPDATE, {"id": 1}, after, SourcePosition((1, 4, 0)), 1, "0-1-2",
        connector="mysql",
    )  # fmt: skip
    message = Message("t", 0, 1, None, None)
    return TableMapper(config, SHAPE, "mysql").change(Decoded(message, event))


def test_by_default_a_wall_time_is_utc_and_passes_unchanged() -> None:
    row = mapped(None, {"id": 1, "at": WALL, "plain": WALL, "zoned": None}).row
    assert row == (1, WALL, WALL, None)


def test_a_zone_reads_wall_times_of_timestamptz_columns_only() -> None:
    aware = dt.datetime(2024, 3, 31, 1, 30, tzinfo=dt.UTC)
    # columns in another order than the target's: the mapped path
    row = mapped("Europe/Berlin", {"zoned": aware, "id": 1, "plain": WALL, "at": WALL}).row
    assert row[1] == WALL.replace(tzinfo=ZoneInfo("Europe/Berlin"))
    assert row[1].astimezone(dt.UTC) == dt.datetime(2024, 3, 31, 0, 30, tzinfo=dt.UTC)
    assert row[2] == WALL  # a timestamp column keeps the wall time
    assert row[3] is aware  # an instant with a zone is never moved


def test_a_zone_applies_when_the_image_is_the_target_row_column_for_column() -> None:
    after = {"id": 1, "at": WALL, "plain": None, "zoned": None}
    row = mapped("America/New_York", after).row
    assert row[1].utcoffset() == dt.timedelta(hours=-4)


def test_an_unknown_zone_is_refused_at_configuration() -> None:
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Base'"):
        TableMapping(source="db.t", target="public.t", key=("id",), datetime_zone="Mars/Base")
