"""A raw psycopg2 connection from an engine, for COPY and session state, with our errors.

The sweeper holds a session advisory lock and temporary tables for a whole run, and
streams COPY between servers: it needs the driver's connection, not SQLAlchemy's.

    >>> with raw_connection(engine, name="source") as conn:  # doctest: +SKIP
    ...     with conn.cursor() as cur:
    ...         cur.execute("SELECT 1")
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from cdc_recon.pg.errors import CONNECT_FAILED, translate, unreachable


@contextlib.contextmanager
def raw_connection(engine: sa.Engine, *, name: str) -> Iterator[Any]:
    """A driver connection in UTC; rolled back if the block raises, closed after it."""
    try:
        fairy: Any = engine.raw_connection()
    except CONNECT_FAILED as exc:  # raw: unwrapped
        raise unreachable(name, exc) from exc
    try:
        with translate(name):
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
