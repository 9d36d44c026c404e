"""Driver errors as errors of our tree: the only module that names psycopg2's exceptions.

Every capability meets PostgreSQL's errors here and decides only what a refusal means
for it. The mapping, once:

    driver error                                   becomes
    a connection that cannot be opened             DatabaseUnavailable ("cannot reach the
      (SQLAlchemy's OperationalError, or the         <name> database: ..."): `unreachable`,
      driver's, unwrapped by `raw_connection()`)     `guard` (SQLAlchemy reads)
    a lost connection (OperationalError,           DatabaseUnavailable ("<name> database:
      InterfaceError) inside `translate()`           ...")
    a lock wait past lock_timeout (55P03)          the caller's `busy` class when given
      inside `translate()`                           (PruneBusy: the retention gives up)
    any other driver error inside `translate()`    the caller's `refused` class (SweepError
                                                     by default: the sweeper's COPY)

Callers that choose between more outcomes than that use the classes and predicates
here (`DriverError`, `is_lost`, `is_unavailable`, `is_duplicate`, `is_undefined_table`,
`is_missing_partition`, `is_lock_timeout`, `sqlstate`; which SQLSTATEs mean "wait" is
`pg.sqlstate`'s one table): the applier
(TransientDatabaseError, ApplyError, a rejected row to quarantine), the source
re-reads (SourceBusy, ConfigError) and the workload (UsageError, WorkloadError). No
module outside `cdc_recon.pg` names a driver class or an SQLSTATE.

    >>> with translate("source"):   # doctest: +SKIP
    ...     cur.execute(sql)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg2
import psycopg2.errors
import sqlalchemy as sa

from cdc_recon.exceptions import CdcReconError, DatabaseUnavailable, SweepError
from cdc_recon.pg import sqlstate as sqlstates

T = TypeVar("T")

DriverError = psycopg2.Error
# Engine.raw_connection() raises the driver's error unwrapped (a refused connection), the
# pool's pre-ping SQLAlchemy's.
CONNECT_FAILED = (sa.exc.OperationalError, psycopg2.OperationalError)
LOCK_NOT_AVAILABLE = "55P03"
UNDEFINED = ("42P01", "42703", "42704")  # table, column, type (the row type of a table)


def first_line(exc: BaseException) -> str:
    """The server's message (with its severity, `ERROR:`), first line."""
    text = getattr(exc, "pgerror", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]


def reason(exc: BaseException) -> str:
    """The driver's message (the original of a SQLAlchemy error), first line."""
    orig = getattr(exc, "orig", None)
    return (str(orig) if orig else str(exc) or type(exc).__name__).strip().splitlines()[0]


def unreachable(
    name: str, exc: BaseException, *, at: str = "", service: str | None = None
) -> DatabaseUnavailable:
    """The error for a connection to the `name` database that could not be opened."""
    where = f" at {at}" if at else ""
    message = f"cannot reach the {name} database{where}: {reason(exc)}"
    return DatabaseUnavailable(message, service=service or "database")


def guard(action: Callable[[], T], *, name: str = "target") -> T:
    """`action()` (SQLAlchemy reads), a server that cannot be reached as ours."""
    try:
        return action()
    except sa.exc.OperationalError as exc:
        raise unreachable(name, exc) from exc


@contextlib.contextmanager
def translate(
    name: str,
    *,
    refused: Callable[[str], CdcReconError] = SweepError,
    busy: Callable[[str], CdcReconError] | None = None,
) -> Iterator[None]:
    """Driver errors of the block as ours: a lost server is `DatabaseUnavailable`, a
    lock wait past `lock_timeout` `busy` (when given), any other refusal `refused`; all
    name the `name` database."""
    try:
        yield
    except DriverError as exc:
        message = f"{name} database: {first_line(exc)}"
        if is_lost(exc):
            raise DatabaseUnavailable(message, service=name) from exc
        if busy is not None and getattr(exc, "pgcode", None) == LOCK_NOT_AVAILABLE:
            raise busy(message) from exc
        raise refused(message) from exc


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, or of the one a SQLAlchemy error wraps."""
    code = getattr(getattr(exc, "orig", None) or exc, "pgcode", None)
    return str(code) if code else None


def is_lost(exc: BaseException) -> bool:
    """The connection is gone (or was never there): a driver error without a server
    SQLSTATE, or one of class 08. (psycopg2 also raises `OperationalError` for server
    errors of classes 53-58, such as an index row too large: those are not lost.)"""
    if not isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return False
    code = getattr(exc, "pgcode", None)
    return not code or code.startswith("08")


def is_unavailable(exc: BaseException) -> bool:
    """Worth waiting for and retrying on a new connection: lost, or a SQLSTATE that
    means the server cannot work now (`pg.sqlstate`); anything else is the data's."""
    return is_lost(exc) or (
        isinstance(exc, DriverError) and sqlstates.is_unavailable(getattr(exc, "pgcode", None))
    )


def is_duplicate(exc: BaseException, constraint: str, *, partitioned: bool = False) -> bool:
    """A unique violation of `constraint` (an index name). With `partitioned`, also of
    a partition's index named `<constraint>_<suffix>`: PostgreSQL names the index of
    the partition that refused the row, not the partitioned index."""
    if not isinstance(exc, psycopg2.errors.UniqueViolation):
        return False
    name = exc.diag.constraint_name or ""
    return name == constraint or (partitioned and name.startswith(f"{constraint}_"))


def is_missing_partition(exc: BaseException, schema: str, table: str) -> bool:
    """A row of `schema.table` (partitioned) whose key no partition holds."""
    return (
        isinstance(exc, psycopg2.errors.CheckViolation)
        and exc.diag.schema_name == schema
        and exc.diag.table_name == table
        and exc.diag.constraint_name is None
    )


def is_lock_timeout(exc: BaseException) -> bool:
    """`lock_timeout` ran out (or NOWAIT found the lock taken): try again later."""
    return sqlstate(exc) == LOCK_NOT_AVAILABLE


def is_undefined_table(exc: BaseException) -> bool:
    return isinstance(exc, psycopg2.errors.UndefinedTable)
