"""The consumer-group service: Kafka → decode → one target transaction → Kafka commit.

Commit protocol, per polled batch (promises P2, P4, P5):

1. poll up to `service.batch_size` messages of the partitions this instance owns (fewer
   when messages are big: about `service.batch_bytes` at most);
2. decode each message into a `Decoded`, or a `Failure(undecodable)`;
3. `Applier.apply`: rows, ledger entries, every failure and each partition's next offset
   in ONE target transaction, committed. A transient database error rolls it back and the
   SAME batch is retried with exponential backoff; nothing is committed to Kafka meanwhile;
4. send the batch's failures to the dead-letter topic, flush, and mark them sent (or
   too large for it) in the `failures` table: `cdc_recon.kafka.producer`'s protocol,
   which also sends again what an earlier run left pending;
5. commit the same next offsets to Kafka, asynchronously (a commit never holds the loop:
   librdkafka keeps a synchronous one waiting while the group has no coordinator).

Step 3 runs on a worker thread (`cdc_recon.apply.pipeline`), one batch at a time and in order:
while the target applies batch N, the next batches are polled and decoded; steps 4-5 of
N follow its own step 3 and come before steps 4-5 of N+1. No batch is applied after one
that failed.

A crash before 3 commits loses nothing (the batch is read again). A crash between 3 and 5
makes Kafka redeliver what the target already holds: on assignment each partition is
started at the offset stored in the target, and the ledger and position guard make a
redelivered change a no-op anyway. Kafka's committed offsets are therefore a copy for
lag tools: a refused Kafka commit comes back at a later poll, is logged, and is sent
again with the next batch or, on a quiet stream, within a second.

`Service.stop()` (SIGTERM/SIGINT, through `cdc_recon.run`) lets the current batch finish
steps 3-5, then the service leaves the group and `run` returns. `until_idle` makes it
return once every owned partition is caught up and no message arrived for that many
seconds. The loop starts nothing beside itself: `cdc_recon.run.run_service` is the
composition root that builds it and starts the sweeper, the scheduled jobs and the HTTP
server.

    >>> service = Service(settings, applier, consumer, producer)  # doctest: +SKIP
    >>> stats = service.run(until_idle=5)                          # doctest: +SKIP

Fault injection for tests: with `CDC_RECON_TEST_CRASH_AFTER_DB_COMMIT=n` in its
environment the process SIGKILLs itself right after its n-th target commit (step 3),
before the dead letters and the Kafka commit: the window test of P4. The same moment is
`cdc_recon.faults`' point `apply.db_commit` (CDC_RECON_TEST_CRASH_AT), as chaos runs use.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from cdc_recon.apply import native
from cdc_recon.apply.metrics import ServiceMonitor
from cdc_recon.apply.pipeline import ApplyPipeline
from cdc_recon.apply.progress import (
    BatchLimit,
    ServiceStats,
    backoff,
    caught_up,
    message_sizes,
    next_offsets,
    total_lag,
)
from cdc_recon.batch import ApplyResult, Decoded, Failure, Message
from cdc_recon.batch import TopicPartitionKey as TPKey
from cdc_recon.codecs import AvroDecoder
from cdc_recon.codecs.messages import decode_batch
from cdc_recon.config import Settings
from cdc_recon.exceptions import (
    ConnectionFailed,
    DatabaseUnavailable,
    KafkaUnavailable,
    TransientDatabaseError,
)
from cdc_recon.faults import crash_point
from cdc_recon.kafka.consumer import GroupConsumer
from cdc_recon.kafka.producer import DeadLetterProducer

LOG = logging.getLogger("cdc_recon.service")
T = TypeVar("T")

CRASH_AFTER_DB_COMMIT_ENV = "CDC_RECON_TEST_CRASH_AFTER_DB_COMMIT"
PROGRESS_EVERY = 10.0  # seconds between progress lines
DEAD_LETTER_FLUSH = 30.0  # seconds per dead-letter flush attempt
QUIET_COMMIT_EVERY = 1.0  # seconds between Kafka commit attempts while no batch arrives
STOP_GRACE = 0.5  # seconds a stop lets the batch being written finish before cancelling it
TRANSIENT_DB = (TransientDatabaseError, DatabaseUnavailable)


class ApplierLike(Protocol):
    def prepare_batch(self, items: Sequence[Decoded | Failure]) -> Any: ...

    def write(
        self, batch: Any, next_offsets: Mapping[TPKey, int], group_id: str
    ) -> ApplyResult: ...

    def stored_offsets(self, group_id: str, partitions: Sequence[TPKey]) -> dict[TPKey, int]: ...

    def cancel(self) -> bool: ...


class _Stopped(Exception):
    """A stop was requested while waiting to retry."""


# -- the loop --------------------------------------------------------------------------


class Service:
    """One group member running the commit protocol of the module docstring."""

    def __init__(
        self,
        settings: Settings,
        applier: ApplierLike,
        consumer: GroupConsumer,
        producer: DeadLetterProducer,
        *,
        avro: AvroDecoder | None = None,
        clock: Callable[[], float] = time.monotonic,
        monitor: ServiceMonitor | None = None,
    ) -> None:
        self._settings = settings
        self.monitor = monitor or ServiceMonitor()
        self._applier = applier
        self._consumer = consumer
        self._producer = producer
        self._avro = avro
        self._clock = clock
        self._stop = threading.Event()
        self._cancel_timer: threading.Timer | None = None
        self._pending: dict[TPKey, int] = {}  # in the target, not yet committed to Kafka
        self._db_commits = 0
        self._crash_after = int(os.environ.get(CRASH_AFTER_DB_COMMIT_ENV) or 0)
        self._last_message_at = clock()
        self._quiet_commit_at = clock()
        self._last_progress = (clock(), 0)
        self.stats = ServiceStats(started=clock())
        self._pipeline = ApplyPipeline(self._apply, self._applied)
        service = settings.service
        self._batch_limit = BatchLimit(service.batch_size, service.batch_bytes)

    def stop(self) -> None:
        """Finish the current batch, then return from `run` (safe from a signal handler).

        A batch still being written `STOP_GRACE` seconds later is cancelled: its
        transaction rolls back whole and the batch is read again by whoever owns its
        partitions next (P4), so a stop never waits on a long batch."""
        self._stop.set()
        if self._cancel_timer is None:
            self._cancel_timer = threading.Timer(STOP_GRACE, self._cancel_write)
            self._cancel_timer.daemon = True
            self._cancel_timer.start()

    def _cancel_write(self) -> None:
        if self._applier.cancel():
            LOG.warning("stopping: cancelled the batch being written (it is read again)")

    def run(self, until_idle: float | None = None) -> ServiceStats:
        """Consume until stopped (or idle, with `until_idle`); leaves the group on return."""
        LOG.info("COPY text encoders: %s", native.describe())
        self._consumer.subscribe(
            self._settings.topics,
            stored_offsets=self._stored_offsets,
            before_revoke=self._before_revoke,
        )
        try:
            while not self._stop.is_set():
                self._step()
                if until_idle is not None and self._idle(until_idle):
                    LOG.info("caught up and idle for %gs: stopping", until_idle)
                    break
            self._pipeline.drain()
            self._log_progress(self._clock())
        except _Stopped:
            LOG.warning("stopped while retrying: the unapplied batch will be read again")
        finally:
            if self._cancel_timer is not None:
                self._cancel_timer.cancel()
            self._pipeline.close()
            self._consumer.close()  # the revocation commits what is pending
        return self.stats

    def _step(self) -> None:
        service = self._settings.service
        timeout = service.poll_timeout
        if self._pipeline.busy:
            # A quiet stream is not waited out: the drain below passes the results of the
            # batches in flight on (stats, Kafka commit) without a poll timeout's delay.
            timeout = min(service.linger, timeout)
        batch = self._consumer.consume_batch(self._batch_limit.next(), timeout, service.linger)
        self._requeue_refused_commits()
        now = self._clock()
        if batch:
            self._batch_limit.observe(message_sizes(batch))
            self._last_message_at = now
            self._process(batch)
        else:
            self._pipeline.drain()
            if self._pending and not self._pipeline.busy and now >= self._quiet_commit_at:
                self._quiet_commit_at = now + QUIET_COMMIT_EVERY
                self._commit_pending()  # offsets adopted on assignment, on a quiet stream
        if now - self._last_progress[0] >= PROGRESS_EVERY:
            self._log_progress(now)
        self.monitor.refresh(self._consumer)

    def _process(self, batch: Sequence[Message]) -> None:
        """Step 2 and the applier's Python half here; step 3 through the pipeline."""
        fmt = self._settings.format
        items = self._retry(
            lambda: decode_batch(batch, fmt, self._avro),
            "decoding (schema registry)",
            (ConnectionFailed,),
        )
        prepared = self._applier.prepare_batch(items)
        self._pipeline.submit(prepared, next_offsets(batch), len(batch))

    def _apply(self, prepared: Any, offsets: dict[TPKey, int]) -> ApplyResult:
        """Step 3, on the pipeline's worker thread."""
        group = self._settings.group_id
        with self.monitor.apply_timer():
            result = self._retry(
                lambda: self._applier.write(prepared, offsets, group),
                "applying a batch",
                TRANSIENT_DB,
            )
        self._after_db_commit()
        return result

    def _applied(self, result: ApplyResult, count: int, offsets: dict[TPKey, int]) -> None:
        """Steps 4-5, back on the service's thread, in batch order."""
        self.stats.add(result, count)
        self.monitor.batch_applied(result, count)
        self._dead_letter(result.failures)
        self._pending.update(offsets)
        self._commit_pending()

    def _after_db_commit(self) -> None:
        self._db_commits += 1
        crash_point("apply.db_commit")
        if self._crash_after and self._db_commits >= self._crash_after:
            LOG.warning("fault injection: SIGKILL after target commit %d", self._db_commits)
            os.kill(os.getpid(), signal.SIGKILL)

    def _retry(self, action: Callable[[], T], what: str, errors: tuple[type[Exception], ...]) -> T:
        """`action()`, retried with backoff on `errors`; `_Stopped` if asked to stop meanwhile."""
        service = self._settings.service
        delays = backoff(service.retry_initial, service.retry_max)
        while True:
            try:
                return action()
            except errors as exc:
                delay = next(delays)
                LOG.warning("%s failed: %s; retrying in %.1fs", what, exc, delay)
                if self._stop.wait(delay):
                    raise _Stopped from exc

    def send_pending_dead_letters(self) -> None:
        """Before consuming: what earlier runs left pending goes first, chunk by chunk,
        until none is left or a stop is asked for."""
        while not self._stop.is_set() and self._dead_letter([]):
            pass

    def _dead_letter(self, failures: Sequence[Failure]) -> int:
        """Step 4 (the protocol is `cdc_recon.kafka.producer`'s): the failures are in the
        target as pending, so a stop may give up here. With them, the producer may take
        on a chunk of older pending ones; returns how many dead letters it took on."""
        for failure in failures:
            message = failure.message
            LOG.warning(
                "quarantined %s[%d]@%d (%s): %s",
                message.topic,
                message.partition,
                message.offset,
                failure.reason,
                failure.detail,
            )
        taken = self._producer.send(failures) or len(failures)
        if not taken:
            return 0
        try:
            self._retry(
                lambda: self._producer.flush(DEAD_LETTER_FLUSH),
                "dead-letter delivery",
                (KafkaUnavailable, *TRANSIENT_DB),
            )
        except _Stopped:
            LOG.error(
                "stopping with undelivered dead letters: they stay pending in the failures "
                "table and the next run sends them"
            )
        return taken

    def _requeue_refused_commits(self) -> None:
        """Commits Kafka refused (reported at the last poll) become pending again, unless a
        newer offset of the partition is pending already."""
        refused, reason = self._consumer.failed_commits()
        if not refused:
            return
        LOG.warning("Kafka refused an offset commit, sent again: %s", reason)
        for key, offset in refused.items():
            self._pending.setdefault(key, offset)

    def _commit_pending(self) -> None:
        """Step 5, best effort: the target holds the offsets that matter."""
        owned = set(self._consumer.assignment())
        pending = {key: offset for key, offset in self._pending.items() if key in owned}
        try:
            self._consumer.commit(pending)
        except KafkaUnavailable as exc:
            LOG.warning("Kafka offset commit failed, retried with the next batch: %s", exc)
            return
        self._pending.clear()

    def _stored_offsets(self, partitions: Sequence[TPKey]) -> Mapping[TPKey, int]:
        """On assignment: where each partition resumes. The same offsets become pending
        Kafka commits: after a crash between steps 3 and 5 the group's committed offset
        lags the stored one, and on a partition that stays quiet no later batch would
        commit it, so lag tools would report messages that are long applied."""
        group = self._settings.group_id
        stored = self._retry(
            lambda: self._applier.stored_offsets(group, partitions),
            "reading stored offsets",
            TRANSIENT_DB,
        )
        self._pending.update(stored)
        return stored

    def _before_revoke(self, partitions: Sequence[TPKey]) -> None:
        """Partitions are going: commit what the target holds for them, while still ours.

        After a failed batch nothing is drained: the failure is already on its way up,
        and an error raised here (while leaving the group) would hide it."""
        if not self._pipeline.failed:
            self._pipeline.drain()
        if self._pending:
            self._commit_pending()
        for key in partitions:
            self._pending.pop(key, None)

    def _idle(self, idle_for: float) -> bool:
        if not self._consumer.joined or self._clock() - self._last_message_at < idle_for:
            return False
        positions = self._consumer.positions()
        return caught_up(positions, self._consumer.watermarks(positions))

    def _log_progress(self, now: float) -> None:
        since, seen = self._last_progress
        rate = (self.stats.messages - seen) / (now - since) if now > since else 0.0
        positions = self._consumer.positions()
        marks = self._consumer.watermarks(positions, cached=True) if positions else {}
        lag = total_lag(positions, marks) if len(marks) == len(positions) else None
        LOG.info("progress: %s", self.stats.line(rate, lag))
        self._last_progress = (now, self.stats.messages)
