"""Values the driver adapts itself: bytea and json parameters.

>>> cur.execute(sql, (binary(message.value), json_param(row)))   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extras


def binary(value: bytes | None) -> Any:
    """`value` for a bytea parameter."""
    return None if value is None else psycopg2.Binary(value)


def json_param(value: Any) -> Any:
    """A dict or list as a json parameter; anything else as it is."""
    return psycopg2.extras.Json(value) if isinstance(value, dict | list) else value
