"""Which target database errors make the service wait, and which belong to a row.

PostgreSQL names every error with a five-character SQLSTATE whose first two characters
are its class. An error is one of two kinds (issue: bad input must never stop, stall or
corrupt the stream):

- **unavailable** (the service waits and retries the same batch, saying so): the
  connection or the server is not there or not able to work right now. Nothing about
  the data would change the answer.
- **the row's** (quarantined with the rows that caused it; the rest of the batch is
  applied): everything else. Data that does not fit (class 22), constraints (23), one
  row hit twice by a statement (21), names or privileges the row's table needs (42),
  limits such as an index row too large (54), errors raised by the target's triggers
  (P0, 38, 39, 2F) and features a value needs (0A). Waiting would never change these:
  treating one as unavailable stalls the partition forever.

The table below is the only place that decides; `pg.errors.is_unavailable` (for the
applier) and the per-row fallback (`apply.isolate`, which re-raises the unavailable ones
from PL/pgSQL) both read it.

    >>> is_unavailable("40P01"), is_unavailable("54000"), is_unavailable(None)
    (True, False, True)
"""

from __future__ import annotations

# Classes (two characters) and single states (five) that mean "not now", not "not this".
UNAVAILABLE: tuple[str, ...] = (
    "08",  # connection exception: refused, broken, lost
    "40",  # transaction rollback: serialization failure 40001, deadlock 40P01
    "53",  # insufficient resources: disk full 53100, out of memory 53200, connections 53300
    "55P03",  # lock not available (lock_timeout)
    "57",  # operator intervention: query canceled 57014, shutdowns 57P01-57P03
    "58",  # system error: I/O error 58030 (the server's files, not the row)
)


def is_unavailable(sqlstate: str | None) -> bool:
    """Whether an error with this SQLSTATE means the database cannot work right now.

    An error without a SQLSTATE comes from the driver or the network (psycopg2's
    `OperationalError` for a dropped connection has none): unavailable.
    """
    if not sqlstate:
        return True
    return sqlstate.startswith(UNAVAILABLE)


def plpgsql_unavailable_test(variable: str = "SQLSTATE") -> str:
    """A PL/pgSQL boolean expression: the same test as `is_unavailable`, for `variable`."""
    classes = [state for state in UNAVAILABLE if len(state) == 2]
    states = [state for state in UNAVAILABLE if len(state) == 5]
    tests = [f"left({variable}, 2) IN ({', '.join(repr(c) for c in classes)})"]
    if states:
        tests.append(f"{variable} IN ({', '.join(repr(s) for s in states)})")
    return " OR ".join(tests)
