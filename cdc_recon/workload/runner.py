"""Runs the workload against the source database: the planner's transactions, paced.

This is a load generator for the *source* side, not part of the data path, so it writes
its own SQL here rather than through the capabilities' modules; its connection and driver
errors go through `cdc_recon.pg` like everyone's. Identifiers are quoted; values travel
as parameters.

    >>> config = WorkloadConfig(schema="shop", rate=200, count=5000)
    >>> run_workload(engine, config).line()  # doctest: +SKIP
    '5000 changes in 2501 transactions, 25.0s, 200 changes/s (insert 2500, update ...)'
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from cdc_recon.exceptions import CdcReconError, DatabaseUnavailable, UsageError, WorkloadError
from cdc_recon.pg.errors import (
    CONNECT_FAILED,
    DriverError,
    is_lost,
    is_undefined_table,
    reason,
    unreachable,
)
from cdc_recon.pg.params import json_param
from cdc_recon.workload.planner import KINDS, Mix, Planner, StartState, Statement
from cdc_recon.workload.tables import BY_NAME, TABLES, quote


@dataclass(frozen=True)
class WorkloadConfig:
    """How much, how fast and what: `rate` changes per second (0: as fast as possible),
    until `duration` seconds passed or `count` changes were made, whichever comes first."""

    schema: str = "public"
    rate: float = 100.0
    duration: float | None = 60.0
    count: int | None = None
    mix: Mix = field(default_factory=Mix)
    seed: int = 1
    max_tx_size: int = 3
    progress_every: float = 5.0

    def __post_init__(self) -> None:
        if self.rate < 0 or self.max_tx_size < 1:
            raise UsageError("rate must be >= 0 and max_tx_size >= 1", value=str(self.rate))
        if self.duration is None and self.count is None:
            raise UsageError("give a duration or a count, or the workload never ends")


@dataclass
class Summary:
    """What a run did so far: changes per (table, kind), transactions, seconds."""

    changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    transactions: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.changes.values())

    def by_kind(self) -> dict[str, int]:
        return {kind: sum(n for (_, k), n in self.changes.items() if k == kind) for kind in KINDS}

    def rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in self.by_kind().items())
        return (
            f"{self.total} changes in {self.transactions} transactions, {self.seconds:.1f}s, "
            f"{self.rate():.0f} changes/s ({kinds})"
        )

    def as_dict(self) -> dict[str, Any]:
        tables: dict[str, dict[str, int]] = {}
        for (table, kind), n in sorted(self.changes.items()):
            tables.setdefault(table, {})[kind] = n
        return {
            "changes": self.total,
            "transactions": self.transactions,
            "seconds": round(self.seconds, 3),
            "changes_per_second": round(self.rate(), 1),
            "by_kind": self.by_kind(),
            "by_table": tables,
        }


def load_start_state(conn: Any, schema: str) -> StartState:
    """The keys every workload table holds now, ordered, so a seed replays the same plan."""
    keys: dict[str, tuple[tuple[Any, ...], ...]] = {}
    with conn.cursor() as cur:
        for table in TABLES:
            columns = ", ".join(quote(k) for k in table.key)
            cur.execute(f"SELECT {columns} FROM {table.qualified(schema)} ORDER BY {columns}")
            keys[table.name] = tuple(tuple(row) for row in cur.fetchall())
    return StartState(keys)


@lru_cache(maxsize=256)
def statement_sql(schema: str, table: str, kind: str, columns: tuple[str, ...]) -> str:
    """Parametrised SQL of one statement shape (psycopg2 `%(name)s` placeholders)."""
    target = BY_NAME[table].qualified(schema)
    where = " AND ".join(f"{quote(k)} = %(k_{k})s" for k in BY_NAME[table].key)
    if kind == "insert":
        names = ", ".join(quote(c) for c in columns)
        params = ", ".join(f"%(v_{c})s" for c in columns)
        return f"INSERT INTO {target} ({names}) VALUES ({params})"
    if kind == "update":
        sets = ", ".join(f"{quote(c)} = %(v_{c})s" for c in columns)
        return f"UPDATE {target} SET {sets} WHERE {where}"
    return f"DELETE FROM {target} WHERE {where}"


def parameters(statement: Statement) -> dict[str, Any]:
    params = {f"k_{k}": value for k, value in statement.key.items()}
    for column, value in statement.values.items():
        params[f"v_{column}"] = json_param(value)
    return params


def execute(conn: Any, schema: str, statements: list[Statement]) -> None:
    """One source transaction; each statement must change exactly one row."""
    with conn.cursor() as cur:
        for statement in statements:
            columns = tuple(statement.values)
            cur.execute(
                statement_sql(schema, statement.table, statement.kind, columns),
                parameters(statement),
            )
            if cur.rowcount != 1:
                raise WorkloadError(
                    f"{statement.kind} of {statement.table} {dict(statement.key)} changed "
                    f"{cur.rowcount} rows: is another writer changing {schema}?"
                )
    conn.commit()


class _Pacer:
    """Holds a run to `rate` changes per second, and says when it is over."""

    def __init__(self, config: WorkloadConfig, clock: Callable[[], float]) -> None:
        self.config, self.clock = config, clock
        self.started = clock()

    def remaining(self, done: int) -> int | None:
        """Changes still allowed, or None when the run is over."""
        config = self.config
        if config.duration is not None and self.clock() - self.started >= config.duration:
            return None
        if config.count is not None:
            return config.count - done if done < config.count else None
        return config.max_tx_size

    def delay(self, done: int) -> float:
        if self.config.rate <= 0:
            return 0.0
        return self.started + done / self.config.rate - self.clock()


def run_workload(
    engine: sa.Engine,
    config: WorkloadConfig,
    *,
    on_progress: Callable[[Summary], None] | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Summary:
    """Run `config`'s workload on `engine`'s database until done or `stop` is set.

    Raises `UsageError` when the tables are missing, `DatabaseUnavailable` when the
    source cannot be reached, `WorkloadError` when it refuses a statement.
    """
    stop = stop or threading.Event()
    summary = Summary()
    with source_connection(engine) as conn:
        planner = Planner(load_start_state(conn, config.schema), config.mix, config.seed)
        pacer = _Pacer(config, clock)
        shown = pacer.started
        while not stop.is_set() and (left := pacer.remaining(summary.total)) is not None:
            size = min(left, planner.rng.randint(1, config.max_tx_size))
            statements = planner.transaction(size)
            execute(conn, config.schema, statements)
            summary.transactions += 1
            summary.changes.update((s.table, s.kind) for s in statements)
            summary.seconds = clock() - pacer.started
            if on_progress is not None and clock() - shown >= config.progress_every:
                shown = clock()
                on_progress(summary)
            if (delay := pacer.delay(summary.total)) > 0:
                stop.wait(delay)
    summary.seconds = clock() - pacer.started
    return summary


@contextlib.contextmanager
def source_connection(engine: sa.Engine) -> Iterator[Any]:
    """A raw psycopg2 connection, closed after the block, with driver errors as ours."""
    try:
        conn: Any = engine.raw_connection()
    except CONNECT_FAILED as exc:
        raise unreachable("source", exc, service="source") from exc
    try:
        yield conn
    except DriverError as exc:
        raise _ours(exc) from exc
    finally:
        with contextlib.suppress(DriverError):
            conn.rollback()
        conn.close()


def _ours(exc: BaseException) -> CdcReconError:
    """A driver error of a workload statement as ours (the text without its severity)."""
    if is_undefined_table(exc):
        return UsageError(f"source database: {reason(exc)}; run `cdc-recon workload schema` first")
    if is_lost(exc):
        return DatabaseUnavailable(f"source database: {reason(exc)}", service="source")
    return WorkloadError(f"source database: {reason(exc)}")
