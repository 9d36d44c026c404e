"""The window sweeper: which source changes never reached the target, and replaying them.

One run (`sweep_once`), under a PostgreSQL advisory lock in the target so that exactly
one sweeper works at a time across all instances:

1. choose the windows: from the persisted watermark of this pipeline and adapter (or
   where the adapter's evidence begins) up to the newest *closed* time, `sweeper.grace`
   seconds ago, in steps of at most `sweeper.window` seconds; an explicit window
   (`--from/--to`) is checked as given and leaves the watermark alone;
2. per step, in one target transaction: the adapter stages the window's source changes
   (COPY, in batches), the stage is anti-joined against the ledger and `key_state`, each
   change is classified applied / superseded / missed / in flight, the missed ones are
   recorded in `missed_changes`, and the watermark advances to the step's end, or to the
   first change still in flight, where the next run looks again;
3. replay every pending missed change through the replay helper (from Kafka while the
   message is retained, else the key's current row from the source, applied by the
   Applier) and record each outcome;
4. prune the change log older than `sweeper.retention` and already swept; record the
   run in `sweep_runs`.

In flight means: newer than the closed time, or in a Kafka partition the group has not
read that far yet, or (while the group lags) newer than anything of its table it
applied since the window began. A group with no lag has nothing in flight.

    >>> run = sweep_once(load_settings("cdc-recon.yml"))   # doctest: +SKIP
    >>> run.missed, run.replayed                            # doctest: +SKIP
    (3, 3)

`cdc-recon run` starts a `SweeperThread` when `sweeper.enabled`; `cdc-recon sweep --once`
runs one sweep.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from cdc_recon.apply.ledger_plan import LEDGER_SLACK  # the ledger's partitions keep it too
from cdc_recon.config import Settings
from cdc_recon.exceptions import KafkaUnavailable
from cdc_recon.faults import crash_point
from cdc_recon.pg.engine import create_engine
from cdc_recon.pg.raw import raw_connection
from cdc_recon.sweep.adapters import ChangeSource, Classified, Window, open_adapter
from cdc_recon.sweep.pending import replay_pending
from cdc_recon.sweep.store import MISSED_SHOWN, StepContext, SweepStore

LOG = logging.getLogger("cdc_recon.sweeper")

OK, IDLE, FAILED = "ok", "idle", "failed"
SKIPPED = "skipped (another sweeper holds the lock)"
REPLAY_LIMIT = 100_000  # pending changes replayed per run; the rest wait for the next

RUN_COLUMNS = (  # of sweep_runs, taken from the SweepRun
    "window_from",
    "window_to",
    "status",
    "applied",
    "superseded",
    "missed",
    "in_flight",
    "replayed",
    "replay_failed",
)

Cancel = Callable[[], bool]


@dataclass(frozen=True)
class SweepRun:
    """What one `sweep_once` found and did; `unit` names what the counts count."""

    status: str
    adapter: str
    unit: str = "changes"
    window_from: dt.datetime | None = None
    window_to: dt.datetime | None = None
    applied: int = 0
    superseded: int = 0
    missed: int = 0
    in_flight: int = 0
    replayed: int = 0
    replay_failed: int = 0
    replay_pending: int = 0
    steps: int = 0
    seconds: float = 0.0
    run_id: int | None = None
    missed_ids: tuple[str, ...] = field(default=())
    detail: str = ""

    @property
    def total(self) -> int:
        """Every change (transaction, message) the run classified."""
        return self.applied + self.superseded + self.missed + self.in_flight

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("window_from", "window_to"):
            moment = data[name]
            data[name] = moment.isoformat() if moment is not None else None
        data["missed_ids"] = list(self.missed_ids)
        return data

    def summary(self) -> str:
        window = f"{self.window_from} .. {self.window_to}" if self.window_from else "no window"
        return (
            f"{self.status}: {window}: applied {self.applied}, superseded {self.superseded}, "
            f"missed {self.missed}, in flight {self.in_flight} ({self.unit}); "
            f"replayed {self.replayed}, failed {self.replay_failed}"
        )


def sweep_once(
    settings: Settings,
    *,
    window_from: dt.datetime | None = None,
    window_to: dt.datetime | None = None,
    replay: bool = True,
    cancel: Cancel | None = None,
) -> SweepRun:
    """One sweep (see the module docstring); `replay=False` only detects.

    Returns a `SweepRun` with status `skipped (another sweeper holds the lock)` when
    another sweeper is running. Raises `ConfigError`, `DatabaseUnavailable`, or
    `SweepError` when the change log cannot be read.
    """
    started = time.monotonic()
    adapter = open_adapter(settings)
    engine = create_engine(settings.target_url, name="target")
    try:
        with raw_connection(engine, name="target") as conn:
            store = SweepStore(
                conn, settings.control_schema, pipeline=settings.group_id, adapter=adapter.name
            )
            if not store.try_lock():
                return SweepRun(SKIPPED, adapter.name, adapter.unit, seconds=_since(started))
            sweep = _Sweep(settings, adapter, store, started, cancel or (lambda: False))
            return sweep.run(window_from, window_to, replay=replay)
    finally:
        adapter.close()
        engine.dispose()


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


class _Sweep:
    """One run, holding the lock; `run` is steps 1-4 of the module docstring."""

    def __init__(
        self,
        settings: Settings,
        adapter: ChangeSource,
        store: SweepStore,
        started: float,
        cancel: Cancel,
    ) -> None:
        self.settings = settings
        self.config = settings.sweeper
        self.adapter = adapter
        self.store = store
        self.started = started
        self.cancel = cancel
        self.result = SweepRun(OK, adapter.name, adapter.unit)  # what is committed so far

    def run(
        self, window_from: dt.datetime | None, window_to: dt.datetime | None, *, replay: bool
    ) -> SweepRun:
        self.store.ensure_tables()
        explicit = window_from is not None or window_to is not None
        closed = self.adapter.closed_until(self.config.grace)
        window = self._window(window_from, window_to, closed)
        if window is None:
            detail = (
                f"nothing closed to check: the source is closed up to {closed.isoformat()} "
                f"(now minus sweeper.grace, or the start of its oldest open writing transaction)"
            )
            return SweepRun(
                IDLE,
                self.adapter.name,
                self.adapter.unit,
                seconds=_since(self.started),
                detail=detail,
            )
        self.result = _with(self.result, run_id=self.store.start_run())
        try:
            self._steps(window, closed, explicit)
            if replay and not self.cancel():
                self._replay()
            if not explicit:
                self._prune(closed)
        except BaseException as exc:
            self._record_failure(exc)
            raise
        return self._finish(self.result)

    def _record_failure(self, exc: BaseException) -> None:
        """Record the run as failed (with what it did), unless the target is gone too."""
        failed = _with(self.result, status=FAILED, detail=f"{type(exc).__name__}: {exc}"[:2000])
        try:
            self.store.rollback()
            self._finish(failed)
        except Exception as record_error:  # the original error is the one to raise
            LOG.warning("cannot record the failed sweep run: %s", record_error)

    def _window(
        self, window_from: dt.datetime | None, window_to: dt.datetime | None, closed: dt.datetime
    ) -> Window | None:
        end = window_to or closed
        start = window_from or self.store.watermark() or self.adapter.earliest()
        if start is None:  # no evidence yet; Kafka-based adapters start one step back
            start = end - dt.timedelta(seconds=self.config.window)
        return Window(start, end) if start < end else None

    def _steps(self, window: Window, closed: dt.datetime, explicit: bool) -> None:
        """Step 2 for each step of `window`; `self.result` says what is committed."""
        found = Classified()
        context = self._context(closed)
        self.result = _with(self.result, window_from=window.start, window_to=window.start)
        for step in window.steps(self.config.window):
            if self.cancel():
                break
            slack = dt.timedelta(seconds=self.config.grace + LEDGER_SLACK)
            step_context = replace(context, ledger_from=step.start - slack)
            counts = self.store.sweep_step(
                functools.partial(self.adapter.stage, window=step),
                step_context,
                transactions=self.adapter.transactions,
                run_id=self.result.run_id or 0,
                classify=functools.partial(self.adapter.classify, window=step),
            )
            held = counts.earliest_in_flight
            swept_until = max(step.start, min(step.end, held)) if held else step.end
            if not explicit:  # an explicit window is a second look: counted once only
                self.store.count_verified(
                    step_context,
                    start=step.start,
                    until=swept_until,
                    transactions=self.adapter.transactions,
                )
                self.store.advance_watermark(swept_until)
            crash_point("sweep.staged")
            self.store.commit()
            found += counts
            self.result = _with(
                self.result,
                window_to=swept_until,
                steps=self.result.steps + 1,
                applied=found.applied,
                superseded=found.superseded,
                missed=found.missed,
                in_flight=found.in_flight,
                missed_ids=found.missed_ids[:MISSED_SHOWN],
            )
            if held is not None and not explicit:
                break  # the next run looks again from the first change still in flight

    def _context(self, closed: dt.datetime) -> StepContext:
        tables = self.settings.tables
        return StepContext(
            sources=[m.source for m in tables],
            targets=[m.target for m in tables],
            group_id=self.settings.group_id,
            open_after=closed,
            caught_up=self._caught_up(),
            ledger_from=closed,
        )

    def _caught_up(self) -> bool:
        """Has the consumer group read everything the topics hold? (No topics: nothing
        can be in flight.) Unknown when Kafka does not answer: then it lags."""
        if not self.settings.topics:
            return True
        from cdc_recon.kafka.window import WindowReader

        try:
            with WindowReader(self.settings) as reader:
                marks = reader.watermarks(reader.partitions(self.settings.topics))
        except KafkaUnavailable as exc:
            LOG.warning("cannot read the topics' end offsets, assuming the group lags: %s", exc)
            return False
        stored = self.store.stored_offsets(self.settings.group_id)
        return all(max(stored.get(k, m.low), m.low) >= m.high for k, m in marks.items())

    def _replay(self) -> None:
        pending = self.store.pending(REPLAY_LIMIT)
        statuses = replay_pending(self.settings, self.store, pending, self.cancel)
        self.result = _with(
            self.result,
            replayed=statuses.get("replayed", 0),
            replay_failed=statuses.get("failed", 0),
            replay_pending=statuses.get("pending", 0),
        )

    def _prune(self, closed: dt.datetime) -> None:
        swept = self.store.watermark()
        if swept is None:
            return
        cutoff = min(closed - dt.timedelta(seconds=self.config.retention), swept)
        pruned = self.adapter.prune(cutoff)
        if pruned:
            LOG.info("pruned %d change-log entries older than %s", pruned, cutoff.isoformat())

    def _finish(self, result: SweepRun) -> SweepRun:
        done = _with(result, seconds=_since(self.started))
        record = {name: getattr(done, name) for name in RUN_COLUMNS}
        record.update(duration=done.seconds, detail=done.detail or None)
        if done.run_id is not None:
            self.store.finish_run(done.run_id, record)
        return done


def _with(result: SweepRun, **changes: Any) -> SweepRun:
    return replace(result, **changes)


class SweeperThread(threading.Thread):
    """Runs `sweep_once` every `sweeper.interval` beside the apply loop, on its own
    connections. Errors are logged and backed off, never raised into the service."""

    def __init__(self, settings: Settings, *, sweep: Callable[..., SweepRun] = sweep_once) -> None:
        super().__init__(name="cdcr-sweeper", daemon=True)
        self.settings = settings
        self._sweep = sweep
        self._stopping = threading.Event()
        self.runs = 0
        self.errors = 0

    def run(self) -> None:
        interval = self.settings.sweeper.interval
        failures = 0
        while not self._stopping.is_set():
            try:
                result = self._sweep(self.settings, cancel=self._stopping.is_set)
                self.runs += 1
                failures = 0
                LOG.info("sweep %s", result.summary())
            except Exception as exc:  # a sweep must never take the service down
                failures += 1
                self.errors += 1
                LOG.warning("sweep failed (%d in a row): %s", failures, exc, exc_info=True)
            delay = interval * min(2 ** max(failures - 1, 0), 10) if failures else interval
            if self._stopping.wait(delay):
                break

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the sweeper to stop after its current step and wait up to `timeout`."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
