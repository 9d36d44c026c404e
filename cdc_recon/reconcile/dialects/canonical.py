"""The canonical value forms that both engines compute in SQL, and the row hash over
them: pure definitions, no database (the dialects write them as SQL).

A column compared across engines belongs to one family, chosen from the two sides'
own families (`pair_family`: int with numeric is numeric; a text column against a
uuid, json, bool or time column takes the other side's family). Its canonical text:

    int        decimal digits, sign when negative; unsigned 64-bit values in full
    numeric    no trailing zeros, no trailing point: 1.50 and 1.5 are `1.5`, 10.00 is `10`
    timestamp  `YYYY-MM-DD HH:MM:SS.ffffff` in UTC, microseconds always written
               (PostgreSQL timestamptz at UTC; MariaDB TIMESTAMP read in a '+00:00'
               session, DATETIME taken as UTC wall time, as the connector's
               `datetime_zone` default; a zero date is NULL, as the connector sends it)
    date       `YYYY-MM-DD` (a zero date is NULL)
    bool       `t` or `f` (MariaDB TINYINT(1), BIT(1): non-zero is `t`)
    uuid       lower-case text (MariaDB CHAR(36) is lower-cased)
    bytes      lower-case hex of the bytes
    text       the characters as stored, byte for byte: case and trailing spaces count
               whatever the collation (CHAR(n) reads without its padding on both)
    json       FETCHED: jsonb prints `{"a": 1}` with keys by length then bytes and keeps
               1.50; MariaDB's JSON_NORMALIZE sorts by bytes and writes 1.5E0. Neither
               can print the other's form in SQL, so json columns leave the row hash and
               are fetched and compared in Python (`normalise_fetched`: keys sorted, no
               whitespace, numbers by value)
    float      FETCHED: both print the shortest exact digits, but choose exponent
               notation by different rules (PostgreSQL `1e-07`, `1e+20`; MariaDB
               `0.0000001`, `1e20`); compared in Python as the doubles they denote

NULL is never a text: the row hash's input is the canonical texts in column order (key
first) joined by `,`, NULL written `~`, and a text-family value written
`<characters>:<text>`, so no separator inside a value, no NULL against '' and no shift
of characters between columns can collide. The other families' texts (digits, signs,
points, dashes, colons, spaces, hex) hold neither `,` nor `~` and go as they are,
which halves the work per row:

    row hash = the first 16 hex digits of md5(encoding), as a signed 64-bit integer

summed per segment exactly (PostgreSQL numeric, MariaDB DECIMAL).

    >>> encode(["1", None, "", "a,b"], ["int", "text", "text", "text"])
    '1,~,0:,3:a,b'
    >>> row_hash_of(["1", None, ""]) == row_hash_of(["1", "", None])
    False
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

FAMILIES = ("int", "numeric", "float", "text", "timestamp", "date", "bool", "uuid", "json", "bytes")
FETCHED = frozenset({"json", "float"})
NULL = "~"
_PREFERRED = ("json", "uuid", "bool", "timestamp", "date", "bytes", "float", "numeric", "int")
MICROSECOND_FORMAT = "YYYY-MM-DD HH:MM:SS.ffffff"


def pair_family(source: str, target: str) -> str:
    """The family both sides of a column are compared in.

    >>> pair_family("int", "numeric"), pair_family("text", "uuid"), pair_family("text", "text")
    ('numeric', 'uuid', 'text')
    """
    if source == target:
        return source
    kinds = {source, target}
    return next((f for f in _PREFERRED if f in kinds), "text")


CARRIED_BY_TEXT = frozenset({"uuid", "json", "text"})


def compatible_families(source: str, target: str) -> bool:
    """The schema check across engines: a column's types agree when their families do,
    when text carries a uuid or json (MariaDB CHAR(36), JSON as LONGTEXT), or when an
    integer widens to a numeric.

    >>> compatible_families("text", "uuid"), compatible_families("int", "numeric")
    (True, True)
    >>> compatible_families("timestamp", "text"), compatible_families("numeric", "int")
    (False, False)
    """
    if source == target:
        return True
    if source == "text":
        return target in CARRIED_BY_TEXT
    return (source, target) == ("int", "numeric")


def prefixed(family: str) -> bool:
    """Whether the family's texts are length-prefixed in the row hash's input."""
    return family == "text"


def encode(texts: Sequence[str | None], families: Sequence[str] | None = None) -> str:
    """The text a row hash is taken of (see the module docstring); every value is of
    the text family unless `families` says otherwise."""
    kinds = families or ["text"] * len(texts)
    return ",".join(
        NULL if t is None else f"{len(t)}:{t}" if prefixed(f) else t
        for t, f in zip(texts, kinds, strict=True)
    )


def row_hash_of(texts: Sequence[str | None], families: Sequence[str] | None = None) -> int:
    """The row hash both engines compute in SQL, computed here (for tests)."""
    data = encode(texts, families).encode("utf-8")
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    value = int(digest[:16], 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def normalise_fetched(family: str, text: str | None) -> str | None:
    """The comparable form of a fetched json or float text."""
    if text is None or family not in FETCHED:
        return text
    if family == "float":
        return repr(float(text))
    return _dump(json.loads(text, parse_float=Decimal, parse_int=Decimal))


def _dump(value: Any) -> str:
    """Compact JSON with sorted keys and numbers by value (1.50, 1.5 and 1.5E0 alike)."""
    if isinstance(value, dict):
        items = (f"{_dump(k)}:{_dump(value[k])}" for k in sorted(value))
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return "0" if value == 0 else format(value.normalize(), "f")
    return json.dumps(value, ensure_ascii=False)
