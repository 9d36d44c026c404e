"""The pruning tasks: the `PruneTask` protocol, the control tables' tasks, and the list.

A task is anything with a `name` and `run(connect, now, dry_run) -> PruneResult`; the
pruner (`cdc_recon.retention.pruner`) runs `default_tasks(settings)` in order, under its
lock, and records each result. `DeleteOld` prunes one table by a `queries.Rule` in short
transactions (`short_transaction`); `KeyStateMarkers` first asks Kafka how long it can
still deliver an old event (`policy.delete_retention`).

    >>> task = DeleteOld("sweep_runs", queries.SWEEP_RUNS, keep=30 * 86400.0, ...)  # doctest: +SKIP
    >>> task.run(connect, dt.datetime.now(dt.UTC), dry_run=True).rows          # doctest: +SKIP
    12
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from cdc_recon.config import Settings
from cdc_recon.exceptions import KafkaUnavailable, PruneBusy, RetentionError
from cdc_recon.pg.errors import translate
from cdc_recon.pg.sql import quote_ident
from cdc_recon.retention import policy, queries
from cdc_recon.retention.policy import BUSY, OFF, OK

Connect = Callable[[], AbstractContextManager[Any]]  # a fresh target driver connection
TopicConfigs = Mapping[str, Mapping[str, str] | None]


@dataclass(frozen=True)
class PruneResult:
    """One task's outcome in one round: `rows` removed (or, in a dry run, that would be)."""

    task: str
    status: str  # policy.OK | BUSY | OFF | FAILED
    rows: int = 0
    cutoff: dt.datetime | None = None
    detail: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        cutoff = self.cutoff.isoformat() if self.cutoff is not None else None
        return {
            "task": self.task,
            "status": self.status,
            "rows": self.rows,
            "cutoff": cutoff,
            "detail": self.detail,
            "seconds": self.seconds,
        }


class PruneTask(Protocol):
    """One step of a pruning round; see `cdc_recon.retention.pruner` for the protocol.

    `run` opens its connections with `connect()`, commits each short transaction on
    its own (each leaves the tables consistent), honours `dry_run` by changing nothing,
    and returns a `PruneResult`: BUSY when a lock was not granted within the timeout,
    OFF when it keeps everything. It may raise; the pruner records that as FAILED.
    """

    @property
    def name(self) -> str: ...

    def run(self, connect: Connect, now: dt.datetime, dry_run: bool) -> PruneResult: ...


@contextlib.contextmanager
def short_transaction(conn: Any, lock_timeout: float, *, table: str) -> Iterator[Any]:
    """A cursor in one transaction whose lock waits end after `lock_timeout` seconds
    (`PruneBusy`); committed when the block ends, rolled back when it raises."""
    try:
        with translate("target", refused=_refused(table), busy=_busy(table)):
            with conn.cursor() as cur:
                cur.execute(queries.set_lock_timeout(lock_timeout))
                yield cur
            conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise


def _refused(table: str) -> Callable[[str], RetentionError]:
    return lambda message: RetentionError(message, table=table)


def _busy(table: str) -> Callable[[str], RetentionError]:
    return lambda message: PruneBusy(message, table=table)


@dataclass(frozen=True)
class DeleteOld:
    """Delete the rows of `rule.table` older than `keep` seconds, range by range (see
    `cdc_recon.retention.queries`); `keep` None keeps them all."""

    name: str
    rule: queries.Rule
    keep: float | None
    schema: str
    batch_size: int = 5000
    lock_timeout: float = 1.0

    def run(self, connect: Connect, now: dt.datetime, dry_run: bool) -> PruneResult:
        started = time.monotonic()
        cutoff = policy.cutoff(now, self.keep)
        if cutoff is None:
            return PruneResult(self.name, OFF, detail="kept forever (setting is null)")
        result = self.prune(connect, cutoff, dry_run)
        return replace(result, seconds=round(time.monotonic() - started, 3))

    def prune(self, connect: Connect, cutoff: dt.datetime, dry_run: bool) -> PruneResult:
        """The rows older than `cutoff`: counted (dry run) or deleted."""
        with connect() as conn:
            if not self._exists(conn):
                return PruneResult(self.name, OFF, cutoff=cutoff, detail="table absent")
            if dry_run:
                return PruneResult(self.name, OK, self._count(conn, cutoff), cutoff)
            return self._delete(conn, cutoff)

    def _exists(self, conn: Any) -> bool:
        with short_transaction(conn, self.lock_timeout, table=self.rule.table) as cur:
            cur.execute(queries.table_exists(), {"table": self._qualified()})
            return bool(cur.fetchone()[0])

    def _qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.rule.table)}"

    def _count(self, conn: Any, cutoff: dt.datetime) -> int:
        with short_transaction(conn, self.lock_timeout, table=self.rule.table) as cur:
            cur.execute(queries.count_all_old(self.rule, self.schema), {"cutoff": cutoff})
            return int(cur.fetchone()[0])

    def _delete(self, conn: Any, cutoff: dt.datetime) -> PruneResult:
        tally = _Tally()
        try:
            with short_transaction(conn, self.lock_timeout, table=self.rule.table) as cur:
                cur.execute(queries.table_blocks(), {"table": self._qualified()})
                blocks = int(cur.fetchone()[0])
            for lo in range(0, max(blocks, 1), queries.CHUNK_BLOCKS):
                self._delete_range(conn, cutoff, lo, lo + queries.CHUNK_BLOCKS >= blocks, tally)
        except PruneBusy as exc:
            detail = f"gave up the round: {exc}"
            return PruneResult(self.name, BUSY, tally.deleted, cutoff, detail)
        if tally.held:
            detail = f"{tally.held} rows held by other transactions: left for the next round"
            return PruneResult(self.name, BUSY, tally.deleted, cutoff, detail)
        return PruneResult(self.name, OK, tally.deleted, cutoff)

    def _delete_range(
        self, conn: Any, cutoff: dt.datetime, lo: int, last: bool, tally: _Tally
    ) -> None:
        """Delete one range's old rows in transactions of at most `batch_size` rows;
        `tally` counts what each committed transaction deleted, and the old rows left
        because another transaction holds them."""
        params = {
            "cutoff": cutoff,
            "lo": f"({lo},0)",
            "hi": f"({lo + queries.CHUNK_BLOCKS},0)",
            "limit": self.batch_size,
        }
        while True:
            with short_transaction(conn, self.lock_timeout, table=self.rule.table) as cur:
                cur.execute(queries.count_old(self.rule, self.schema, last=last), params)
                old = int(cur.fetchone()[0])
                cur.execute(queries.delete_old(self.rule, self.schema, last=last), params)
                removed = max(cur.rowcount, 0)
            tally.deleted += removed
            if removed < self.batch_size:
                tally.held += max(old - removed, 0)
                return


@dataclass
class _Tally:
    """What one table's round committed so far (kept when a later transaction is busy)."""

    deleted: int = 0
    held: int = 0


@dataclass(frozen=True)
class FunctionTask:
    """A plain function as a task: `FunctionTask("ledger_partitions", maintain)` where
    `maintain(connect, now, dry_run) -> PruneResult`."""

    name: str
    function: Callable[[Connect, dt.datetime, bool], PruneResult]

    def run(self, connect: Connect, now: dt.datetime, dry_run: bool) -> PruneResult:
        return self.function(connect, now, dry_run)


ReadTopics = Callable[[], TopicConfigs]


@dataclass(frozen=True)
class KeyStateMarkers:
    """Delete markers of `key_state` older than `key_state.delete_retention` (by default
    as long as the topics can redeliver an older event: `policy.delete_retention`)."""

    delete: DeleteOld
    setting: float | str
    read_topics: ReadTopics

    @property
    def name(self) -> str:
        return self.delete.name

    def run(self, connect: Connect, now: dt.datetime, dry_run: bool) -> PruneResult:
        started = time.monotonic()
        topics: TopicConfigs | None = None
        if self.setting == "topics":
            try:
                topics = self.read_topics()
            except KafkaUnavailable as exc:
                return PruneResult(self.name, OFF, detail=f"kept: {exc}")
        horizon = policy.delete_retention(self.setting, topics)
        cutoff = policy.cutoff(now, horizon.seconds)
        if cutoff is None:
            return PruneResult(self.name, OFF, detail=f"kept: {horizon.reason}")
        result = self.delete.prune(connect, cutoff, dry_run)
        detail = "; ".join(part for part in (horizon.reason, result.detail) if part)
        return replace(result, detail=detail, seconds=round(time.monotonic() - started, 3))


def _topic_reader(settings: Settings) -> ReadTopics:
    from cdc_recon.kafka.admin import topic_configs

    def read() -> TopicConfigs:
        return topic_configs(
            settings.kafka_bootstrap, settings.topics, policy.TOPIC_CONFIGS, settings.kafka
        )

    return read


# Each control table's rule and the setting that keeps it, in the order they run:
# referencing rows before the rows they reference (corrections and review rows before
# findings, results and findings before runs).
TABLE_RULES: tuple[tuple[queries.Rule, str], ...] = (
    (queries.FAILURES, "failures"),
    (queries.MISSED_CHANGES, "missed_changes"),
    (queries.SWEEP_RUNS, "sweep_runs"),
    (queries.RECON_CORRECTIONS, "recon_corrections"),
    (queries.REVIEW_QUEUE, "review"),
    (queries.RECON_FINDINGS, "recon_runs"),
    (queries.RECON_RESULTS, "recon_runs"),
    (queries.RECON_RUNS, "recon_runs"),
    (queries.RECON_JOBS, "recon_runs"),
)


def default_tasks(settings: Settings, *, read_topics: ReadTopics | None = None) -> list[PruneTask]:
    """Every pruning task of a round, in order. A new task joins here, in one line: an
    object of the `PruneTask` protocol, or a function wrapped as
    `FunctionTask("ledger_partitions", functools.partial(maintain, settings))`."""
    config = settings.retention

    def delete(rule: queries.Rule, keep: float | None) -> DeleteOld:
        return DeleteOld(
            rule.table,
            rule,
            keep,
            settings.control_schema,
            batch_size=config.batch_size,
            lock_timeout=config.lock_timeout,
        )

    markers = KeyStateMarkers(
        delete(queries.KEY_STATE, None),
        settings.key_state.delete_retention,
        read_topics or _topic_reader(settings),
    )
    tables = [delete(rule, getattr(config, setting)) for rule, setting in TABLE_RULES]
    return [markers, *tables]
