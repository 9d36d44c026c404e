"""The pruner: keeps every control table bounded (promise P8), one instance at a time.

One round (`prune_once`):

1. Take the session advisory lock of the control schema on a connection of its own
   (`queries.try_lock`). Another instance holding it means that instance prunes: the
   round returns SKIPPED at once. The lock is released when the round's connection
   closes, so a crashed pruner never keeps it.
2. Run each `PruneTask` of `tasks.default_tasks(settings)` in order, with the same
   `now`. A task opens its own connections (`connect()`) and works in short
   transactions that each commit on their own: a range of at most `batch_size` rows,
   locks waited for at most `retention.lock_timeout` seconds (the applier never waits
   behind the pruner for longer than that), rows another transaction holds skipped
   rather than waited for (`FOR UPDATE SKIP LOCKED`). A lock wait that times out ends
   the task with BUSY; the next round tries again. Order matters only where rows
   reference others: referencing rows go first.
   In a dry run each task counts its table as it is, changing nothing: rows that
   only become free once an earlier task deleted what refers to them are not counted.
3. Record each task's result in `prune_state` (not in a dry run) and count it in the
   metrics (`retention.metrics`). A task that raises is recorded FAILED and the round
   goes on with the next; a target that cannot be reached ends the round.

Crashes: a transaction of step 2 is complete on its own (the rows it deleted were old
enough when it committed, and nothing else refers to them by then), so a crash between
two of them loses only the uncommitted one, whose rows the next round finds again. A
crash before step 3 leaves `prune_state` one round behind; the rows are gone all the
same. Nothing here is needed for correctness of the apply path: pruning removes only
rows that no promise reads any more (see `queries` for what each table keeps).

A new task joins in one line in `default_tasks`: any object with `name` and
`run(connect, now, dry_run) -> PruneResult` (the `PruneTask` protocol in
`retention.tasks`), or a function of that signature wrapped in `FunctionTask`, e.g. the
ledger's partition maintenance.

    >>> pruned = prune_once(load_settings("cdc-recon.yml"), dry_run=True)  # doctest: +SKIP
    >>> {r.task: r.rows for r in pruned.results}                         # doctest: +SKIP
    {'key_state': 120, 'failures': 3, ...}

`cdc-recon run` starts a `PrunerThread` when `retention.enabled`; `cdc-recon prune
--once` runs one round.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdc_recon.config import Settings
from cdc_recon.exceptions import ConnectionFailed
from cdc_recon.pg.engine import create_engine
from cdc_recon.pg.errors import translate
from cdc_recon.pg.raw import raw_connection
from cdc_recon.pg.sql import quote_ident
from cdc_recon.retention import queries
from cdc_recon.retention.policy import FAILED
from cdc_recon.retention.tasks import Connect, PruneResult, PruneTask, default_tasks

LOG = logging.getLogger("cdc_recon.retention")

OK = "ok"
SKIPPED = "skipped (another instance holds the pruning lock)"
FIRST_ROUND_AFTER = 60.0  # seconds after start: the applier's catch-up comes first

Cancel = Callable[[], bool]


@dataclass(frozen=True)
class PruneRound:
    """What one round did, task by task."""

    status: str
    dry_run: bool
    now: dt.datetime
    results: tuple[PruneResult, ...] = field(default=())
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(result.rows for result in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "rows": self.rows,
            "seconds": self.seconds,
            "tasks": [result.as_dict() for result in self.results],
        }

    def summary(self) -> str:
        verb = "would prune" if self.dry_run else "pruned"
        parts = [f"{r.task} {r.rows} ({r.status})" for r in self.results]
        return f"{self.status}: {verb} " + (", ".join(parts) or "nothing")


def prune_once(
    settings: Settings,
    *,
    dry_run: bool = False,
    tasks: Sequence[PruneTask] | None = None,
    now: dt.datetime | None = None,
    cancel: Cancel | None = None,
) -> PruneRound:
    """One round (see the module docstring); `dry_run` counts and changes nothing.

    Raises `DatabaseUnavailable` when the target cannot be reached; a task's other
    errors are its FAILED result.
    """
    started = time.monotonic()
    moment = now or dt.datetime.now(dt.UTC)
    engine = create_engine(settings.target_url, name="target")
    schema = settings.control_schema
    try:
        with raw_connection(engine, name="target") as conn:
            if not _try_lock(conn, schema):
                return PruneRound(SKIPPED, dry_run, moment, seconds=_since(started))
            if not dry_run:
                _ensure_state_table(conn, schema)
            connect = functools.partial(raw_connection, engine, name="target")
            chosen = default_tasks(settings) if tasks is None else tasks
            results = []
            for task in chosen:
                if cancel is not None and cancel():
                    break
                result = _run_task(task, connect, moment, dry_run)
                if not dry_run:
                    _record(conn, schema, result, moment)
                results.append(result)
            return PruneRound(OK, dry_run, moment, tuple(results), _since(started))
    finally:
        engine.dispose()


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _run_task(task: PruneTask, connect: Connect, now: dt.datetime, dry_run: bool) -> PruneResult:
    started = time.monotonic()
    try:
        return task.run(connect, now, dry_run)
    except ConnectionFailed:
        raise
    except Exception as exc:  # one task's failure must not stop the others
        LOG.warning("pruning %s failed: %s", task.name, exc, exc_info=True)
        detail = f"{type(exc).__name__}: {exc}"[:2000]
        return PruneResult(task.name, FAILED, detail=detail, seconds=_since(started))


def _try_lock(conn: Any, schema: str) -> bool:
    with translate("target"), conn.cursor() as cur:
        cur.execute(queries.try_lock(), {"schema": schema})
        locked = bool(cur.fetchone()[0])
    conn.commit()
    return locked


def _ensure_state_table(conn: Any, schema: str) -> None:
    """Create `prune_state` when a deployment predates it (as `cdc-recon init` does)."""
    with translate("target"), conn.cursor() as cur:
        cur.execute(queries.table_exists(), {"table": f"{quote_ident(schema)}.prune_state"})
        if not cur.fetchone()[0]:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('cdc_recon.init'))")
            for statement in queries.retention_ddl(schema):
                cur.execute(statement)
    conn.commit()


def _record(conn: Any, schema: str, result: PruneResult, now: dt.datetime) -> None:
    params = {
        "task": result.task,
        "at": now,
        "status": result.status,
        "rows": result.rows,
        "cutoff": result.cutoff,
        "detail": result.detail or None,
    }
    with translate("target"), conn.cursor() as cur:
        cur.execute(queries.record_state(schema), params)
    conn.commit()


class PrunerThread(threading.Thread):
    """Runs `prune_once` every `retention.interval` beside the apply loop (the first
    round `FIRST_ROUND_AFTER` seconds after start), on its own connections. Errors are
    logged and retried the next round, never raised into the service."""

    def __init__(
        self,
        settings: Settings,
        *,
        prune: Callable[..., PruneRound] = prune_once,
        first_after: float = FIRST_ROUND_AFTER,
    ) -> None:
        super().__init__(name="cdcr-pruner", daemon=True)
        self.settings = settings
        self._prune = prune
        self._first_after = first_after
        self._stopping = threading.Event()
        self.rounds = 0
        self.errors = 0

    def run(self) -> None:
        interval = self.settings.retention.interval
        if self._stopping.wait(min(self._first_after, interval)):
            return
        while not self._stopping.is_set():
            try:
                pruned = self._prune(self.settings, cancel=self._stopping.is_set)
                self.rounds += 1
                LOG.info("retention %s", pruned.summary())
            except Exception as exc:  # pruning must never take the service down
                self.errors += 1  # the next round, an interval later, tries again
                LOG.warning("pruning failed: %s", exc, exc_info=True)
            if self._stopping.wait(interval):
                break

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the pruner to stop after its current task and wait up to `timeout`."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
