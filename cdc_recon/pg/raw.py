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

import psycopg2
import sqlalchemy as sa

from cdc_recon.exceptions import DatabaseUnavailable, SweepError


def first_line(exc: BaseException) -> str:
    text = getattr(exc, "pgerror", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]


@contextlib.contextmanager
def translate(name: str) -> Iterator[None]:
    """Driver errors as ours: a lost server is `DatabaseUnavailable`, the rest `SweepError`."""
    try:
        yield
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        raise DatabaseUnavailable(f"{name} database: {first_line(exc)}", service=name) from exc
    except psycopg2.Error as exc:
        raise SweepError(f"{name} database: {first_line(exc)}") from exc


@contextlib.contextmanager
def raw_connection(engine: sa.Engine, *, name: str) -> Iterator[Any]:
    """A driver connection in UTC; rolled back if the block raises, closed after it."""
    try:
        fairy: Any = engine.raw_connection()
    except (sa.exc.OperationalError, psycopg2.OperationalError) as exc:  # raw: unwrapped
        orig = getattr(exc, "orig", None) or exc
        reason = first_line(orig)
        raise DatabaseUnavailable(f"cannot reach the {name} database: {reason}") from exc
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
