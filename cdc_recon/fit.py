"""Whether a value fits its target column exactly: pure, no database.

A value that does not fit is refused with a reason, never coerced (promise P5): an
object written into a text column as its JSON, a number as its digits, `"1"` read as an
integer, 12.345 rounded into `numeric(12,2)`, a date without a time taken as midnight.
The checks are built once per target column from PostgreSQL's `format_type()` text and
run on every value the applier writes, so each is a few type tests.

Other types (uuid, bytea, arrays, enums, ...) are left to the target, but for text that
no PostgreSQL column holds: what the target rejects is quarantined row by row
(`apply.isolate`).

    >>> check = column_check("numeric(12,2)")
    >>> check(Decimal("1.5")) is None, check(Decimal("12.345"))
    (True, 'has more than 2 decimal places')
    >>> column_check("text")(12345)
    'is an int, not text'
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

Check = Callable[[Any], str | None]
"""None when the value fits; otherwise why not (a phrase after the value)."""

_LENGTH = re.compile(r"^(?:character varying|character|bpchar|varchar)\((\d+)\)(\[\])?$")
_NUMERIC = re.compile(r"^numeric(?:\((\d+)(?:,\s*(-?\d+))?\))?$")
_TIMESTAMP = re.compile(r"^timestamp(?:\(\d\))? with(out)? time zone$")
# Debezium's ZonedTimestamp (ISO_OFFSET_DATE_TIME): a full time and an offset or Z.
ZONED_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INTEGERS = {"smallint": 15, "integer": 31, "bigint": 63}
TEXT_TYPES = frozenset({"text", "character varying", "character", "name", "citext"})


def column_check(type_name: str) -> Check:
    """The check for a column of this `format_type()` text. For a type left to the
    target, text must still be text PostgreSQL can hold (no NUL, valid UTF-8), so
    that no value fails a batch's COPY before the target can judge its row."""
    if type_name in TEXT_TYPES:
        return text_check(None)
    if type_name in _INTEGERS:
        return integer_check(_INTEGERS[type_name])
    if type_name == "boolean":
        return _boolean
    if type_name == "date":
        return _date
    length = _LENGTH.match(type_name)
    if length and not length.group(2):
        return text_check(int(length.group(1)))
    numeric = _NUMERIC.match(type_name)
    if numeric:
        precision, scale = numeric.groups()
        if precision is None:
            return numeric_check(None, None)
        return numeric_check(int(precision), int(scale or 0))
    if _TIMESTAMP.match(type_name):
        return _timestamp
    if type_name in ("json", "jsonb"):
        return _json
    return _any


NativeKind = tuple[str, int] | None
"""What the Rust row checker (`native/`, `RowChecker`) checks of a column: ("text",
limit or -1), ("int", bits), ("timestamp", 0), ("any", 0); None: the Python check only."""


def native_kind(type_name: str) -> NativeKind:
    """The common case of `column_check(type_name)` that the Rust row checker decides
    without a Python call per value. It only ever says yes where the check here would
    (it says no for what it is unsure of, and then the check here runs and says why);
    numeric, boolean, date and JSON columns stay with the checks here."""
    if type_name in TEXT_TYPES:
        return ("text", -1)
    if type_name in _INTEGERS:
        return ("int", _INTEGERS[type_name])
    length = _LENGTH.match(type_name)
    if length and not length.group(2):
        return ("text", int(length.group(1)))
    if _TIMESTAMP.match(type_name):
        return ("timestamp", 0)
    if type_name in ("boolean", "date", "json", "jsonb") or _NUMERIC.match(type_name):
        return None
    return ("any", 0)


def text_check(max_length: int | None) -> Check:
    limit = max_length if max_length is not None else -1

    def check(value: Any) -> str | None:
        if type(value) is not str:
            return f"is {_a(value)}, not text"
        if value.isascii() and "\x00" not in value and (limit < 0 or len(value) <= limit):
            return None  # the usual case, without another call
        return text_problem(value) or (
            f"is longer than {max_length} characters"
            if max_length is not None and len(value) > max_length
            else None
        )

    return check


def text_problem(value: str) -> str | None:
    """What PostgreSQL text cannot hold: NUL, and lone surrogates (no UTF-8 form)."""
    if "\x00" in value:
        return "holds a NUL character"
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return "holds a lone surrogate (no UTF-8 form)"
    return None


def integer_check(bits: int) -> Check:
    low, high = -(2**bits), 2**bits - 1

    def check(value: Any) -> str | None:
        if type(value) is not int:
            return f"is {_a(value)}, not an integer"
        if not low <= value <= high:
            return f"is out of range for a {bits + 1}-bit integer"
        return None

    return check


def numeric_check(precision: int | None, scale: int | None) -> Check:
    """int, Decimal and float (a JSON number) that fit without rounding; a decimal string
    (Debezium's `decimal.handling.mode=string`) too."""

    quantum = Decimal(1).scaleb(-scale) if scale is not None else None
    digits_before = (precision - scale) if precision is not None and scale is not None else None

    def check(value: Any) -> str | None:
        kind = type(value)
        if (  # the usual case: a Connect Decimal of the column's own scale, fitting
            kind is Decimal
            and quantum is not None
            and digits_before is not None
            and value.is_finite()
            and value.same_quantum(quantum)
            and value.adjusted() < digits_before
        ):
            return None
        if kind is bool or kind not in (int, float, Decimal, str):
            return f"is {_a(value)}, not a number"
        try:
            number = value if kind is Decimal else Decimal(repr(value) if kind is float else value)
        except InvalidOperation:
            return "is not a number"
        if not number.is_finite():
            return None if number.is_nan() and precision is None else "is not a finite number"
        if precision is None or scale is None:
            return None
        _sign, digits, exponent = number.as_tuple()
        assert isinstance(exponent, int)
        if exponent < -scale:
            return f"has more than {scale} decimal places"
        if exponent > 0 and kind is Decimal:
            # Decimal(unscaled).scaleb(-scale) of a Connect Decimal with a negative scale
            return f"has a negative scale ({-exponent}); the column's scale is {scale}"
        whole = number.adjusted() + 1 if digits != (0,) else 0
        if whole > precision - scale:
            return f"does not fit numeric({precision},{scale})"
        return None

    return check


def _any(value: Any) -> str | None:
    if type(value) is not str or (value.isascii() and "\x00" not in value):
        return None
    return text_problem(value)


def _json(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return text_problem(value)
    if kind is dict or kind is list:
        try:
            orjson.dumps(value)
        except TypeError as exc:
            return f"cannot be written as JSON ({exc})"
    return None


def _boolean(value: Any) -> str | None:
    return None if type(value) is bool else f"is {_a(value)}, not a boolean"


def _date(value: Any) -> str | None:
    if type(value) is dt.date:
        return None
    if type(value) is str and _DATE.fullmatch(value):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            return "is not a valid date"
        return None
    return f"is {_a(value)}, not a date"


def _timestamp(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return instant_problem(value)
    if type(value) is str:
        return zoned_timestamp_problem(value)
    return f"is {_a(value)}, not a timestamp"


def zoned_timestamp_problem(text: str) -> str | None:
    """Why `text` is not a Debezium ZonedTimestamp; None when it is one."""
    if not ZONED_TIMESTAMP.fullmatch(text):
        return "is not an ISO-8601 timestamp with a time and an offset"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return "is not a valid timestamp"
    return instant_problem(moment)


def instant_problem(moment: dt.datetime) -> str | None:
    """An instant past 9999-12-31 UTC (or before year 1) reads back nowhere in Python."""
    if moment.tzinfo is None or 1 < moment.year < 9999:
        return None
    try:
        moment.astimezone(dt.UTC)
    except OverflowError:
        return "is outside years 1-9999 in UTC"
    return None


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def preview(value: Any, limit: int = 80) -> str:
    """A value for an error message: its repr, cut at `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
