"""MariaDB driver errors as errors of our tree: the only module naming PyMySQL's errors.

    error                                            means
    2002, 2003, 2005, 2006, 2013, 2055 (client:      the server cannot be reached or the
      cannot connect, gone away, lost connection)      connection was lost: wait and retry
    1205 lock wait timeout, 1213 deadlock            busy: retry the statement/transaction
    1040 too many connections, 1053 shutdown,        the server is not serving now: wait
      1927 connection killed
    anything else                                    the statement was refused (the data or
                                                       the SQL): not worth retrying as is

`translate(name)` turns the first group into DatabaseUnavailable and leaves the others to
the caller's `refused` class; `is_unavailable`, `is_busy` and `code` answer for callers
that choose between more outcomes than that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pymysql

from cdc_recon.exceptions import CdcReconError, DatabaseUnavailable

DriverError = pymysql.err.Error
LOST = frozenset({2002, 2003, 2005, 2006, 2013, 2055})
NOT_SERVING = frozenset({1040, 1053, 1927})
BUSY = frozenset({1205, 1213})


def code(exc: BaseException) -> int | None:
    """The server's (or client's) error number, when the error has one."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    return args[0] if args and isinstance(args[0], int) else None


def message(exc: BaseException) -> str:
    """`(number) text`, first line, as the server said it."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2:
        return f"({args[0]}) {str(args[1]).strip().splitlines()[0]}"
    return str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__


def is_unavailable(exc: BaseException) -> bool:
    """The server is gone or not serving: waiting and retrying may help."""
    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    return code(exc) in LOST | NOT_SERVING


def is_busy(exc: BaseException) -> bool:
    """A lock wait timeout or a deadlock: the transaction may be tried again."""
    return code(exc) in BUSY


def unreachable(name: str, url: Any, exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"cannot reach the {name} database {url}: {message(exc)}")


@contextlib.contextmanager
def translate(name: str, refused: type[CdcReconError] = CdcReconError) -> Iterator[None]:
    """Driver errors inside become DatabaseUnavailable (lost, not serving) or `refused`."""
    try:
        yield
    except DriverError as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailable(f"{name} database: {message(exc)}") from exc
        raise refused(f"{name} database: {message(exc)}") from exc
