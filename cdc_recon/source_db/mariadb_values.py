"""MariaDB column values as the Debezium MariaDB connector's messages decode (pure, no I/O).

A row re-read from MariaDB must reach the applier with the same Python values the
service gets from the connector's message for that row (`cdc_recon.codecs`), or the
target would hold another form of the same row. The connector config of
`deploy/connect/debezium-mariadb.json` (decimal/bigint.unsigned precise, binary as
bytes, adaptive microseconds, TinyIntOneToBooleanConverter) and the codec give:

    column type                 PyMySQL gives            the message decodes to
    TINYINT(1)                  int                      bool
    BIT(1)                      bytes b'\\x01'            bool
    BIGINT UNSIGNED             int                      Decimal (precise)
    DECIMAL                     Decimal                  Decimal
    DATETIME                    naive datetime           naive datetime (wall time)
    TIMESTAMP                   naive, session UTC       aware datetime in UTC
    DATE                        date                     date
    TIME                        timedelta                time of day (0 to 24 h)
    zero date/datetime          the text '0000-00-00'    None (what Debezium streams)
    JSON, TEXT, ENUM, SET       str                      str
    BLOB, BINARY, VARBINARY     bytes                    bytes
    others (INT, FLOAT, ...)    int, float               the same

One table of conversions, `converters(columns)`, used for rows and for the keys of
deleted rows alike.

    >>> convert = converters([("id", "bigint", "bigint(20) unsigned")])
    >>> convert_row({"id": 18446744073709551615}, convert)
    {'id': Decimal('18446744073709551615')}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

Converter = Callable[[Any], Any]
Column = tuple[str, str, str]  # name, DATA_TYPE, COLUMN_TYPE (information_schema.COLUMNS)
INTEGERS = frozenset({"tinyint", "smallint", "mediumint", "int", "bigint", "year"})
DAY = dt.timedelta(days=1)


def _bool(value: Any) -> bool:
    if isinstance(value, bytes | bytearray):
        return any(value)
    return bool(value)


def _unsigned(value: Any) -> Decimal:
    return Decimal(int(value))


def _temporal(kind: type) -> Converter:
    """A date or datetime, or None for a zero date (PyMySQL hands those back as text)."""

    def convert(value: Any) -> Any:
        return value if isinstance(value, kind) else None

    return convert


def _timestamp(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value.replace(tzinfo=dt.UTC)  # the session reads TIMESTAMP in UTC


def _time(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value
    if not isinstance(value, dt.timedelta) or not dt.timedelta(0) <= value < DAY:
        raise ValueError(f"TIME {value} is not a time of day")
    return (dt.datetime.min + value).time()


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def converter(data_type: str, column_type: str) -> Converter | None:
    """The conversion of one column, or None when PyMySQL's value is already right."""
    kind, full = data_type.lower(), column_type.lower()
    if kind == "tinyint" and full.startswith("tinyint(1)"):
        return _bool
    if kind == "bit":
        return _bool if full == "bit(1)" else _bytes
    if kind == "bigint" and "unsigned" in full:
        return _unsigned
    if kind == "datetime":
        return _temporal(dt.datetime)
    if kind == "date":
        return _temporal(dt.date)
    if kind == "timestamp":
        return _timestamp
    if kind == "time":
        return _time
    if kind in ("blob", "tinyblob", "mediumblob", "longblob", "binary", "varbinary"):
        return _bytes
    return None


def converters(columns: Iterable[Column]) -> dict[str, Converter]:
    """Per column name, the conversions a row of these columns needs."""
    found = {}
    for name, data_type, column_type in columns:
        convert = converter(data_type, column_type)
        if convert is not None:
            found[name] = convert
    return found


def convert_row(row: Mapping[str, Any], convert: Mapping[str, Converter]) -> dict[str, Any]:
    """`row` with each value in the form the connector's message decodes to (None stays
    None); `ValueError` names a value that has none."""
    out = dict(row)
    for name, change in convert.items():
        value = out.get(name)
        if value is not None:
            try:
                out[name] = change(value)
            except ValueError as exc:
                raise ValueError(f"column {name}: {exc}") from None
    return out


def key_param(data_type: str, text: str) -> Any:
    """A key value from its key_text form, typed so that MariaDB compares it exactly
    (a string would be compared with an integer column as a double)."""
    kind = data_type.lower()
    if kind in INTEGERS:
        return int(text)
    if kind == "decimal":
        return Decimal(text)
    return text
