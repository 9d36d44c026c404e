"""A raw psycopg2 connection from an engine, for COPY and session state, with our errors.

The sweeper holds a session advisory lock and temporary tables for a whole run, and
streams COPY between servers: it needs the driver's connection, not SQLAlchemy's.

    >>> with raw_connection(engine, name="source") as conn:  # doctest: +SKIP
    ...     with conn.cursor() as cur:
    ...         cur.execute("SELECT 1")
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.extras
import sqlalchemy as sa

from cdc_recon.exceptions import CdcReconError, SweepError
from cdc_recon.pg.errors import CONNECT_FAILED, translate, unreachable


def binary(value: bytes | None) -> Any:
    """`value` for a bytea parameter."""
    return None if value is None else psycopg2.Binary(value)


def json_param(value: Any) -> Any:
    """A dict or list as a json parameter; anything else as it is."""
    return psycopg2.extras.Json(value) if isinstance(value, dict | list) else value


@contextlib.contextmanager
def raw_connection(
    engine: sa.Engine, *, name: str, refused: Callable[[str], CdcReconError] = SweepError
) -> Iterator[Any]:
    """A driver connection in UTC; rolled back if the block raises, closed after it.

    Driver errors of the block are translated (`cdc_recon.pg.errors.translate`): a
    refused statement becomes `refused`."""
    try:
        fairy: Any = engine.raw_connection()
    except CONNECT_FAILED as exc:
        raise unreachable(name, exc) from exc
    try:
        with translate(name, refused=refused):
            with fairy.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
            fairy.commit()
            yield fairy
    except BaseException:
        with contextlib.suppress(Exception):
            fairy.rollback()
        raise
    finally:
        # Never hand a session with temp tables or a held advisory lock back to the pool.
        with contextlib.suppress(Exception):
            fairy.invalidate()
