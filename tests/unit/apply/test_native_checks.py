"""The Rust row checker (`cdc_recon_native.RowChecker`) never passes a row `fit` refuses.

`cdc_recon.fit` is the reference: the checker may only say a row fits where every
column's Python check says None, and for the usual values (ASCII text, ints in range,
Debezium ZonedTimestamps, datetimes) it must say so, or it saves nothing. Each property
draws values of the kinds a codec produces, near the edges the checks draw (NUL, lone
surrogates, lengths, integer bounds, dates that do not exist, offsets, years 1 and 9999),
and compares. `cdc_recon_native` is imported directly: these fail when it is not built.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import cdc_recon_native
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_recon.apply.mapping import TableMapper, TargetShape
from cdc_recon.config import TableMapping
from cdc_recon.events import MISSING
from cdc_recon.exceptions import InvalidChange
from cdc_recon.fit import column_check, native_kind

TYPES = [
    "text",
    "character varying(5)",
    "smallint",
    "integer",
    "bigint",
    "timestamp with time zone",
    "timestamp(3) without time zone",
    "uuid",
    "numeric(12,2)",
    "boolean",
    "date",
    "jsonb",
]

digit_text = st.text(alphabet="0123456789", min_size=1, max_size=3)
stamps = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}{}".format,
    st.integers(0, 10_000),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.sampled_from(["", ".1", ".123456", ".123456789", ".1234567890", "."]),
    st.sampled_from(["Z", "+00:00", "-05:30", "+23:59", "+24:00", "+00:60", "", "z", "+0100"]),
)
values = st.one_of(
    st.none(),
    st.just(MISSING),
    st.text(max_size=8),
    st.sampled_from(["a\x00b", "\ud800", "ok", "héllo", "12345", "123456", "日本語日本"]),
    st.integers(-(2**64), 2**64),
    st.sampled_from([2**15 - 1, 2**15, -(2**15), -(2**15) - 1, 2**31, 2**63 - 1, -(2**63)]),
    st.booleans(),
    stamps,
    st.datetimes(timezones=st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=5))])),
    st.decimals(allow_nan=True, places=2),
    st.floats(),
    st.dates(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def python_fits(types: list[str], row: tuple[Any, ...]) -> bool:
    for type_name, value in zip(types, row, strict=True):
        if value is None or value is MISSING:
            continue
        if column_check(type_name)(value) is not None:
            return False
    return True


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(TYPES), values)
def test_the_checker_passes_only_what_fit_passes(type_name: str, value: Any) -> None:
    kind = native_kind(type_name)
    checker = cdc_recon_native.RowChecker([kind], MISSING)
    if kind is None:  # left to Python: the checker has nothing to say of it
        assert checker.fits((value,))
    elif checker.fits((value,)):
        assert python_fits([type_name], (value,)), f"{value!r} passed for {type_name}"


@settings(max_examples=500, deadline=None)
@given(stamps)
def test_valid_zoned_timestamps_of_years_2_to_9998_take_no_python(text: str) -> None:
    checker = cdc_recon_native.RowChecker([("timestamp", 0)], MISSING)
    year = int(text[:4])
    if python_fits(["timestamp with time zone"], (text,)) and 2 <= year <= 9998:
        offset = text[-6:]
        odd = offset[0] in "+-" and int(offset[4:]) > 59  # left to Python on purpose
        assert checker.fits((text,)) or odd, text


def test_the_usual_row_takes_no_python() -> None:
    kinds = [native_kind(t) for t in ("integer", "text", "character varying(20)", "uuid")]
    checker = cdc_recon_native.RowChecker(kinds + [native_kind("timestamp with time zone")], None)
    row = (7, "Ada", "ada@example.com", "6f1e…", "2026-11-27T10:00:00.123456Z")
    assert checker.fits(row) and checker.fits(list(row))
    assert not checker.fits(row[:4]), "a row of another length is left to Python"
    assert not checker.fits((2**31, *row[1:]))
    assert not checker.fits((7, "Ada\x00", *row[2:]))
    assert not checker.fits((7, "Ada", "x" * 21, *row[3:]))
    assert not checker.fits((*row[:4], "2026-02-29T10:00:00Z"))


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        cdc_recon_native.RowChecker([("float", 0)], MISSING)


def test_the_mapper_still_names_the_column_a_value_does_not_fit() -> None:
    shape = TargetShape(
        "public.t",
        ("id", "at", "amount"),
        ("id",),
        types=("integer", "timestamp with time zone", "numeric(12,2)"),
    )
    mapper = TableMapper(TableMapping(source="public.t", target="public.t", key=["id"]), shape)
    mapper._check("public.t", (1, "2026-11-27T10:00:00Z", Decimal("1.50")))  # fits
    with pytest.raises(InvalidChange, match="column 'at'"):
        mapper._check("public.t", (1, "2026-13-27T10:00:00Z", Decimal("1.50")))
    with pytest.raises(InvalidChange, match="column 'amount'"):
        mapper._check("public.t", (1, "2026-11-27T10:00:00Z", Decimal("1.505")))
