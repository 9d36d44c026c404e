"""The dead-letter producer: quarantined messages, raw, with why and where they came from.

Each `Failure` becomes one message on `settings.dead_letter_topic` with the original raw
key and value and these headers (UTF-8 text):

    cdc_recon.reason     undecodable | unmapped | rejected
    cdc_recon.detail     the error, for a human (at most `MAX_DETAIL` bytes)
    cdc_recon.topic      where the message was read
    cdc_recon.partition
    cdc_recon.offset

Dead-letter protocol (promise P5: every failure has its dead letter, or its row in the
`failures` table says why not; the row's `dead_letter` column is the state):

0. At start, `size_dead_letter_topic`: the largest `max.message.bytes` of the topics the
   service reads (the broker's default for a topic that is not there yet) plus
   `HEADER_ROOM` is what a dead letter may need. The dead-letter topic is created with
   that limit when absent, so the broker never auto-creates it with its 1 MB default; an
   existing one keeps its own limit (operators own it; a smaller one is logged). The
   producer's `message.max.bytes` is that limit less `BATCH_FRAMING`: librdkafka packs
   several messages into one batch up to that size, and a batch over the topic's limit
   fails every message in it.
1. The applier stores each failure with `dead_letter = 'pending'` in the batch's target
   transaction (the column's default; the service's step 3).
2. `send(failures)` queues each failure. One whose message plus headers exceeds the
   producer's limit is not produced: its outcome is `too_large`, with the sizes (its raw
   bytes stay in the row). An error `produce()` gives for one message is that message's
   outcome (`too_large`, or `refused` for another refusal of the record), never the
   batch's. With it, at most every `BACKLOG_EVERY` seconds, one chunk of the failures
   still `pending` in the journal, oldest first: on the first call every pending one (a
   crash between steps 1 and 4, an earlier run that stopped before delivering), later
   only those pending for `STALE_AFTER` (those of an instance that died).
3. `flush(timeout)` waits for the delivery reports: a delivered message is `sent`; a
   broker's refusal of that message (an invalid record; too large for the topic after
   all, once sent alone, as the broker refuses whole batches) is its outcome; anything
   else (a timeout, the broker unreachable, the topic gone) leaves the message
   undelivered: `KafkaUnavailable` is raised, and the next `flush()` produces it again.
   The service retries with backoff and says so.
4. Still in `flush()`, the outcomes go to the journal, one UPDATE of `pending` rows per
   call; a database error is raised and the next `flush()` records them again.

A crash before step 1 commits loses nothing: the batch is read again. A crash between
steps 1 and 4 leaves the rows `pending`; the next run's first `send()` sends them again.
Delivery is therefore at-least-once: a consumer of the dead-letter topic deduplicates by
the coordinate headers. Only `pending` rows change state, so recording never undoes an
earlier outcome.

    >>> sizing = size_dead_letter_topic(settings)                          # doctest: +SKIP
    >>> producer = DeadLetterProducer(settings, sizing, journal=journal)  # doctest: +SKIP
    >>> producer.send(result.failures)                                    # doctest: +SKIP
    >>> producer.flush(30.0)                                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from cdc_recon.batch import Failure, Message
from cdc_recon.config import Settings
from cdc_recon.exceptions import ConnectionFailed, KafkaUnavailable
from cdc_recon.kafka.admin import (
    broker_max_message_bytes,
    client_config,
    ensure_topic,
    max_message_bytes,
)

LOG = logging.getLogger("cdc_recon.dead_letter")
HEADER_PREFIX = "cdc_recon."
MAX_DETAIL = 4096  # bytes of the detail header
# What the headers add to a message: the detail, five names, the source coordinates
# (a topic name is at most 249 characters) and their varints, with room to spare.
HEADER_ROOM = 8192
# A record batch's own framing (61 bytes, 12 more in the log) and a record's varints:
# measured at ~90 bytes for one record, kept well clear of.
BATCH_FRAMING = 512
LIBRDKAFKA_DEFAULT_MAX = 1_000_000  # librdkafka's `message.max.bytes`

BACKLOG_ROWS = 500  # failures per chunk of the pending backlog
BACKLOG_BYTES = 32 << 20  # raw bytes per chunk (the first failure always goes)
BACKLOG_EVERY = 5.0  # seconds between looks at the pending backlog
STALE_AFTER = 60.0  # seconds a failure stays pending before another instance sends it


class DeadLetterState:
    """Values of the `failures.dead_letter` column."""

    PENDING = "pending"  # stored, not yet confirmed on the topic
    SENT = "sent"  # delivery confirmed
    TOO_LARGE = "too_large"  # larger than the topic or the producer accepts
    REFUSED = "refused"  # the broker refused the record for another reason


# librdkafka's errors that concern one message, and the state they give it. Any other
# error is the broker's or the topic's, and the message is produced again.
MESSAGE_ERRORS = {
    KafkaError.MSG_SIZE_TOO_LARGE: DeadLetterState.TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE: DeadLetterState.TOO_LARGE,
    KafkaError.INVALID_RECORD: DeadLetterState.REFUSED,  # e.g. no key on a compacted topic
    KafkaError._INVALID_ARG: DeadLetterState.REFUSED,
}

Outcome = tuple[Message, str, str | None]  # the failure's message, its state, why


class DeliveryJournal(Protocol):
    """Where dead-letter outcomes are kept (`cdc_recon.apply.dead_letters.DeadLetterJournal`).

    Called on the service's thread only; `ConnectionFailed` when the store is unreachable.
    """

    def backlog(
        self, *, after_id: int, older_than: float, limit: int, max_bytes: int
    ) -> tuple[list[tuple[int, Failure]], bool]:
        """Pending failures with an id above `after_id`, pending for `older_than`
        seconds, oldest first: at most `limit`, and no more raw bytes than `max_bytes`
        beyond the first; and whether more are pending after them."""
        ...

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Move the `pending` rows of `outcomes` to their state, in one statement."""
        ...


@dataclass(frozen=True)
class DeadLetterSizing:
    """What the dead-letter topic accepts and what the topics read may need of it."""

    topic: str
    topic_limit: int  # the dead-letter topic's max.message.bytes
    needed: int  # the largest max.message.bytes read, plus HEADER_ROOM
    created: bool = False

    @property
    def producer_limit(self) -> int:
        """The producer's `message.max.bytes`: batches stay within the topic's limit."""
        return max(self.topic_limit - BATCH_FRAMING, 1000)


def needed_limit(limits: dict[str, int | None], broker_default: int) -> int:
    """What a dead letter of these topics may need: never below the broker's default,
    which a topic created later (or one whose own limit is removed) gets."""
    largest = max((broker_default if v is None else v for v in limits.values()), default=0)
    return max(largest, broker_default) + HEADER_ROOM


def size_dead_letter_topic(settings: Settings) -> DeadLetterSizing:
    """Step 0: read the limits, create the dead-letter topic when absent (see above)."""
    bootstrap, extra = settings.kafka_bootstrap, settings.kafka
    limits = max_message_bytes(bootstrap, settings.topics, extra)
    needed = needed_limit(limits, broker_max_message_bytes(bootstrap, extra))
    wanted = needed + BATCH_FRAMING
    topic = settings.dead_letter_topic
    limit, created = ensure_topic(bootstrap, topic, max_bytes=wanted, extra=extra)
    if created:
        LOG.info("created the dead-letter topic %s with max.message.bytes %d", topic, limit)
    elif limit < wanted:
        LOG.warning(
            "the dead-letter topic %s accepts %d bytes but messages of the topics read may "
            "need %d: larger failures stay in the failures table (dead_letter too_large) "
            "unless its max.message.bytes is raised to %d",
            topic,
            limit,
            wanted,
            wanted,
        )
    return DeadLetterSizing(topic, limit, needed, created)


def _text(value: str, limit: int | None = None) -> bytes:
    """UTF-8 of `value` (lone surrogates escaped), cut to `limit` bytes on a character."""
    data = value.encode("utf-8", "backslashreplace")
    if limit is not None and len(data) > limit:
        data = data[:limit].decode("utf-8", "ignore").encode()
    return data


def headers(failure: Failure) -> list[tuple[str, str | bytes | None]]:
    """The dead-letter headers of `failure` (see the module docstring)."""
    message = failure.message
    return [
        (HEADER_PREFIX + "reason", _text(failure.reason)),
        (HEADER_PREFIX + "detail", _text(failure.detail, MAX_DETAIL)),
        (HEADER_PREFIX + "topic", _text(message.topic)),
        (HEADER_PREFIX + "partition", str(message.partition).encode()),
        (HEADER_PREFIX + "offset", str(message.offset).encode()),
    ]


def wire_size(message: Message, hdrs: Sequence[tuple[str, str | bytes | None]]) -> int:
    """Bytes of key, value and headers, with a generous allowance for the varints."""
    payload = len(message.key or b"") + len(message.value or b"")
    return payload + sum(len(name) + len(value or b"") + 10 for name, value in hdrs) + 32


class DeadLetterProducer:
    """The dead-letter protocol's steps 2-4 (module docstring), on the service's thread."""

    def __init__(
        self,
        settings: Settings,
        sizing: DeadLetterSizing | None = None,
        *,
        journal: DeliveryJournal | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = settings.dead_letter_topic
        configured = settings.kafka.get("message.max.bytes")
        limits = [int(configured)] if configured else []
        limits.append(sizing.producer_limit if sizing else LIBRDKAFKA_DEFAULT_MAX)
        self.limit = min(limits)
        self._topic_limit = sizing.topic_limit if sizing else None
        config = {
            **client_config(settings.kafka_bootstrap, settings.kafka),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": self.limit,
        }
        self._producer = Producer(config)
        self._journal = journal
        self._clock = clock
        self._in_flight = 0
        self._undelivered: list[tuple[Failure, KafkaError]] = []
        self._outcomes: list[Outcome] = []
        self._alone: list[Failure] = []  # refused in a batch too large, to send alone
        self._backlog_at = clock()  # when the next look at the backlog is due
        self._backlog_after = 0  # the cursor of the current pass
        self._first_pass = True

    # -- step 2 ----------------------------------------------------------------------

    def send(self, failures: Sequence[Failure]) -> int:
        """Queue each failure, and a chunk of the pending backlog when one is due;
        returns how many dead letters this call took on (`flush()` settles them)."""
        for failure in failures:
            self._produce(failure)
        return len(failures) + self._send_backlog()

    def _produce(self, failure: Failure, *, alone: bool = False) -> None:
        hdrs = headers(failure)
        size = wire_size(failure.message, hdrs)
        if size > self.limit:
            self._settle(failure, DeadLetterState.TOO_LARGE, self._too_large(size))
            return

        def delivered(error: KafkaError | None, _msg: Any) -> None:
            self._in_flight -= 1
            if error is None:
                self._outcomes.append((failure.message, DeadLetterState.SENT, None))
            elif error.code() == KafkaError.MSG_SIZE_TOO_LARGE and not alone:
                self._alone.append(failure)  # its batch was too large: was it this one?
            elif error.code() in MESSAGE_ERRORS:
                self._settle(failure, MESSAGE_ERRORS[error.code()], f"refused: {error.str()}")
            else:
                self._undelivered.append((failure, error))

        while True:
            try:
                self._producer.produce(
                    self.topic,
                    key=failure.message.key,
                    value=failure.message.value,
                    headers=hdrs,
                    on_delivery=delivered,
                )
                self._in_flight += 1
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.1)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() in MESSAGE_ERRORS:
                    self._settle(failure, MESSAGE_ERRORS[error.code()], f"{error.str()}")
                else:
                    self._undelivered.append((failure, error))
                return

    def _too_large(self, size: int) -> str:
        accepts = f"the producer sends at most {self.limit}"
        if self._topic_limit is not None:
            accepts += f" ({self.topic} has max.message.bytes {self._topic_limit})"
        return f"{size} bytes with headers; {accepts}"

    def _settle(self, failure: Failure, state: str, detail: str) -> None:
        message = failure.message
        LOG.warning(
            "no dead letter for %s[%d]@%d (%s): %s; its raw bytes stay in the failures table",
            message.topic,
            message.partition,
            message.offset,
            state,
            detail,
        )
        self._outcomes.append((message, state, f"{self.topic}: {detail}"))

    def _send_backlog(self) -> int:
        now = self._clock()
        if self._journal is None or now < self._backlog_at:
            return 0
        try:
            rows, more = self._journal.backlog(
                after_id=self._backlog_after,
                older_than=0.0 if self._first_pass else STALE_AFTER,
                limit=BACKLOG_ROWS,
                max_bytes=BACKLOG_BYTES,
            )
        except ConnectionFailed as exc:  # the backlog waits; the batch's own go on
            LOG.warning("cannot read pending dead letters, looking again soon: %s", exc)
            self._backlog_at = now + BACKLOG_EVERY
            return 0
        for row_id, failure in rows:
            self._produce(failure)
            self._backlog_after = row_id
        if not more:  # this pass is over
            self._backlog_after, self._first_pass = 0, False
            self._backlog_at = now + BACKLOG_EVERY
        if rows:
            LOG.info("sending %d pending dead letter(s) again", len(rows))
        return len(rows)

    # -- steps 3 and 4 -----------------------------------------------------------------

    def flush(self, timeout: float) -> None:
        """Wait for every queued message and record the outcomes; raises
        `KafkaUnavailable` if any was not delivered (the next `flush()` produces it
        again) and the journal's `ConnectionFailed` if recording failed (the next
        `flush()` records again)."""
        retry, self._undelivered = self._undelivered, []
        for failure, _ in retry:
            self._produce(failure)
        self._producer.flush(timeout)
        # The broker refuses a whole batch over the topic's limit (lowered since the
        # start, say): each of its messages goes again alone, so that only one too large
        # by itself is settled too_large.
        while self._alone:
            self._produce(self._alone.pop(0), alone=True)
            self._producer.flush(timeout)
        self._record()
        if self._in_flight > 0:
            raise KafkaUnavailable(
                f"{self._in_flight} dead-letter message(s) not delivered to {self.topic} "
                f"within {timeout:g}s"
            )
        if self._undelivered:
            failure, error = self._undelivered[0]
            where = f"{failure.message.topic}[{failure.message.partition}]@"
            raise KafkaUnavailable(
                f"{len(self._undelivered)} dead-letter message(s) not delivered to "
                f"{self.topic}, e.g. {where}{failure.message.offset}: {error.str()}"
            )

    def _record(self) -> None:
        if not self._outcomes:
            return
        if self._journal is not None:
            self._journal.record(self._outcomes)
        self._outcomes = []

    @property
    def pending(self) -> int:
        """Messages queued or failed and not yet delivered."""
        return self._in_flight + len(self._undelivered)

    def close(self, timeout: float = 5.0) -> None:
        """Give queued messages `timeout` seconds; log what is left (it stays pending)."""
        self._producer.flush(timeout)
        try:
            self._record()
        except ConnectionFailed as exc:
            LOG.error("cannot record dead-letter outcomes (they stay pending): %s", exc)
        if self.pending:
            LOG.error(
                "%d dead-letter message(s) for %s were not delivered; they stay pending in "
                "the failures table and the next run sends them",
                self.pending,
                self.topic,
            )
