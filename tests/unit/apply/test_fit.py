"""Whether a value fits its column exactly (`cdc_recon.fit`), and safe failure text."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_recon.apply.pipeline import ApplyPipeline
from cdc_recon.batch import Failure, Message, printable
from cdc_recon.cli.app import OneLineFormatter, main
from cdc_recon.fit import column_check


@pytest.mark.parametrize(
    ("type_name", "value", "problem"),
    [
        ("text", "ok", None),
        ("text", {"a": 1}, "is a dict, not text"),
        ("text", 1.5, "is a float, not text"),
        ("text", True, "is a bool, not text"),
        ("text", "a\x00b", "holds a NUL character"),
        ("text", "\ud800", "holds a lone surrogate (no UTF-8 form)"),
        ("character varying(3)", "abcd", "is longer than 3 characters"),
        ("character(2)", "ab", None),
        ("bigint", 2**63 - 1, None),
        ("bigint", 2**63, "is out of range for a 64-bit integer"),
        ("integer", "1", "is a str, not an integer"),
        ("smallint", True, "is a bool, not an integer"),
        ("numeric(12,2)", Decimal("12.34"), None),
        ("numeric(12,2)", 12.345, "has more than 2 decimal places"),
        (
            "numeric(12,2)",
            Decimal(1000).scaleb(2),
            "has a negative scale (-2); the column's scale is 2",
        ),
        ("numeric(12,2)", Decimal("1E+10"), "has a negative scale (-10); the column's scale is 2"),
        ("numeric(12,2)", 10**10, "does not fit numeric(12,2)"),
        ("numeric", Decimal("NaN"), None),
        ("numeric(12,2)", Decimal("Infinity"), "is not a finite number"),
        ("boolean", 1, "is an int, not a boolean"),
        ("date", dt.date(2024, 1, 1), None),
        ("date", 19000, "is an int, not a date"),
        ("timestamp with time zone", "2024-01-01T00:00:00Z", None),
        (
            "timestamp with time zone",
            "2024-01-01T00:00:00Z\n",
            "is not an ISO-8601 timestamp with a time and an offset",
        ),
        ("timestamp(3) with time zone", 1_700_000_000_000, "is an int, not a timestamp"),
        ("uuid", "x\x00", "holds a NUL character"),
        ("jsonb", {"a": "\ud800"}, "cannot be written as JSON"),
        ("jsonb", {"a": [1, 2]}, None),
    ],
)
def test_column_checks(type_name: str, value: object, problem: str | None) -> None:
    got = column_check(type_name)(value)
    assert got == problem if problem is None else got is not None and got.startswith(problem)


@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=4, max_value=10**12, min_value=-(10**12)
    )
)
def test_a_numeric_fits_exactly_when_the_column_holds_it_unrounded(value: Decimal) -> None:
    fits = column_check("numeric(12,2)")(value) is None
    exact = value == value.quantize(Decimal("0.01")) and value.as_tuple().exponent >= -2
    assert fits == (exact and abs(value) < 10**10 and value.as_tuple().exponent <= 0)


def test_failure_text_is_printable_for_every_sink() -> None:
    failure = Failure(Message("t", 0, 1, None, b"\x00raw"), "unmapped", "bad\ntable\x00", "a\nb")
    assert failure.detail == "bad\\ntable\\x00" and failure.table == "a\\nb"
    assert failure.message.value == b"\x00raw"  # the bytes are kept as they came
    assert printable("x" * 10, 4) == "xxxx… (10 characters)"


def test_log_lines_cannot_be_forged() -> None:
    record = logging.LogRecord(
        "cdc_recon", logging.WARNING, "f", 1, "table %s", ("a\nFORGED",), None
    )
    assert "\n" not in OneLineFormatter("%(message)s").format(record)


def test_a_later_batch_names_the_failure_before_it() -> None:
    def apply(batch: object, offsets: object) -> object:
        raise ValueError("the first cause")

    pipeline = ApplyPipeline(apply, lambda *_: None, depth=3)  # type: ignore[arg-type]
    pipeline.submit("a", {}, 1)
    pipeline.submit("b", {}, 1)
    with pytest.raises(ValueError, match="the first cause"):
        pipeline.drain()
    assert pipeline.failed
    with pytest.raises(Exception, match="after an earlier batch failed: the first cause"):
        pipeline.drain()
    pipeline.close()


def test_an_unexpected_error_is_one_line_naming_its_cause(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*_: object, **__: object) -> None:
        raise ValueError("what went wrong\nsecond line")

    monkeypatch.setattr("cdc_recon.cli.app.load_settings", boom)
    assert main(["config"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ValueError: what went wrong\\nsecond line" in err
