"""The service loop's logic, with fakes for Kafka and the applier (no services needed).

Claims about Kafka or PostgreSQL themselves are tested in tests/integration/test_service.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from cdc_recon.apply.progress import (
    BatchLimit,
    ServiceStats,
    backoff,
    caught_up,
    next_offsets,
    partition_lag,
    total_lag,
)
from cdc_recon.apply.service import Service
from cdc_recon.batch import ApplyResult, Decoded, Failure, FailureReason, Message
from cdc_recon.codecs.messages import decode_message
from cdc_recon.config import Settings
from cdc_recon.exceptions import ConfigError, KafkaUnavailable, TransientDatabaseError
from cdc_recon.kafka.consumer import CommitFailures, Watermarks, consumer_config
from cdc_recon.kafka.producer import headers

GOOD = (
    b'{"payload":{"id":1}}',
    b'{"payload":{"before":null,"after":{"id":1,"name":"a"},"source":{"connector":"postgresql",'
    b'"schema":"public","table":"t","lsn":10,"txId":5,"ts_ms":1},"op":"c","ts_ms":2}}',
)


def msg(offset: int, partition: int = 0, value: bytes | None = GOOD[1]) -> Message:
    return Message("t", partition, offset, GOOD[0], value)


# -- pure helpers ------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    assert list(itertools.islice(backoff(0.5, 3.0), 6)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert next(backoff(10.0, 2.0)) == 2.0


def test_next_offsets_is_one_past_the_last_message_per_partition() -> None:
    batch = [msg(5), msg(3, partition=1), msg(6), msg(4, partition=1)]
    assert next_offsets(batch) == {("t", 0): 7, ("t", 1): 5}
    assert next_offsets([]) == {}


@pytest.mark.parametrize(
    ("position", "low", "high", "lag"),
    [
        (10, 0, 10, 0),
        (7, 0, 10, 3),
        (None, 4, 10, 6),
        (None, 5, 5, 0),
        (2, 5, 9, 4),
        (12, 0, 10, 0),
    ],
)
def test_partition_lag(position: int | None, low: int, high: int, lag: int) -> None:
    assert partition_lag(position, Watermarks(low, high)) == lag


def test_caught_up_needs_every_partition_at_its_end_and_known() -> None:
    marks = {("t", 0): Watermarks(0, 5), ("t", 1): Watermarks(0, 0)}
    assert caught_up({("t", 0): 5, ("t", 1): None}, marks)
    assert not caught_up({("t", 0): 4, ("t", 1): None}, marks)
    assert not caught_up({("t", 0): 5, ("t", 2): 0}, marks), "unknown watermarks: not caught up"
    assert caught_up({}, marks)
    assert total_lag({("t", 0): 1, ("t", 1): None, ("t", 9): 0}, marks) == 4


def test_decode_message_quarantines_bad_input_and_keeps_tombstones() -> None:
    good = decode_message(msg(1), "auto", None)
    assert isinstance(good, Decoded) and good.event is not None
    assert good.event.table == "public.t"
    tombstone = decode_message(msg(2, value=None), "auto", None)
    assert isinstance(tombstone, Decoded) and tombstone.event is None
    bad = decode_message(msg(3, value=b"\xff not json"), "auto", None)
    assert isinstance(bad, Failure)
    assert bad.reason == FailureReason.UNDECODABLE and bad.message.offset == 3 and bad.detail


def test_dead_letter_headers_carry_reason_and_coordinates() -> None:
    failure = Failure(Message("orders", 3, 42, b"k", b"v"), "rejected", "too long")
    assert dict(headers(failure)) == {
        "cdc_recon.reason": b"rejected",
        "cdc_recon.detail": b"too long",
        "cdc_recon.topic": b"orders",
        "cdc_recon.partition": b"3",
        "cdc_recon.offset": b"42",
    }


def test_consumer_config_owns_the_commit_settings() -> None:
    settings = Settings(kafka={"session.timeout.ms": "6000", "enable.auto.commit": "false"})
    config = consumer_config(settings, lambda error: None)
    assert config["enable.auto.commit"] is False and config["enable.auto.offset.store"] is False
    assert config["session.timeout.ms"] == "6000"
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert config["group.id"] == settings.group_id
    with pytest.raises(ConfigError) as raised:
        consumer_config(Settings(kafka={"enable.auto.commit": "true"}), lambda error: None)
    assert raised.value.key == "kafka.enable.auto.commit"


def test_stats_count_failures_by_reason() -> None:
    stats = ServiceStats()
    failure = Failure(msg(1), "unmapped", "x")
    stats.add(ApplyResult(applied=3, duplicates=1, failures=[failure, failure]), 6)
    stats.add(ApplyResult(superseded=2), 2)
    assert (stats.batches, stats.messages, stats.applied, stats.superseded) == (2, 8, 3, 2)
    assert stats.failures_by_reason == {"unmapped": 2} and stats.failed == 2
    assert "lag 7" in stats.line(1.0, 7) and "lag ?" in stats.line(1.0, None)


# -- the loop, with fakes ----------------------------------------------------------------


class FakeConsumer:
    """Hands out scripted batches; records what the service asked of Kafka."""

    def __init__(self, batches: list[list[Message]], log: list[Any], end: int = 0) -> None:
        self.batches = batches
        self.log = log
        self.end = end
        self.assigned: list[tuple[str, int]] = []
        self.joined = False
        self.refuse_commits = 0
        self.refused_later: list[dict[tuple[str, int], int]] = []  # what on_commit reports
        self.callbacks: dict[str, Any] = {}

    def subscribe(self, topics: Sequence[str], **callbacks: Any) -> None:
        self.callbacks = callbacks
        self.assigned = [("t", 0), ("t", 1)]
        self.stored = callbacks["stored_offsets"](self.assigned)
        self.joined = True

    def consume_batch(
        self, max_messages: int, timeout: float, linger: float | None = None
    ) -> list[Message]:
        return self.batches.pop(0) if self.batches else []

    def assignment(self) -> list[tuple[str, int]]:
        return list(self.assigned)

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if self.refuse_commits:
            self.refuse_commits -= 1
            raise KafkaUnavailable("rebalance in progress")
        self.log.append(("kafka-commit", dict(offsets)))

    def failed_commits(self) -> tuple[dict[tuple[str, int], int], str | None]:
        if self.refused_later and any(e[0] == "kafka-commit" for e in self.log):
            return self.refused_later.pop(0), "Broker: Not coordinator"
        return {}, None

    def positions(self) -> dict[tuple[str, int], int | None]:
        return {key: self.end for key in self.assigned}

    def watermarks(self, partitions: Any, *, cached: bool = False) -> dict[Any, Watermarks]:
        return {key: Watermarks(0, self.end) for key in partitions}

    def close(self) -> None:
        self.callbacks["before_revoke"](self.assigned)
        self.log.append(("close",))


class FakeApplier:
    def __init__(self, log: list[Any], transient: int = 0) -> None:
        self.log = log
        self.transient = transient
        self.on_error = lambda: None

    def prepare_batch(self, items: Sequence[Decoded | Failure]) -> Sequence[Decoded | Failure]:
        return items

    def write(
        self, items: Sequence[Decoded | Failure], offsets: Mapping[Any, int], group: str
    ) -> ApplyResult:
        if self.transient:
            self.transient -= 1
            self.log.append(("db-error",))
            self.on_error()
            raise TransientDatabaseError("connection lost")
        failures = [item for item in items if isinstance(item, Failure)]
        self.log.append(("db-commit", [i.message.offset for i in items], dict(offsets)))
        return ApplyResult(applied=len(items) - len(failures), failures=failures)

    def stored_offsets(self, group: str, partitions: Sequence[Any]) -> dict[Any, int]:
        return {("t", 0): 40}


class FakeProducer:
    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.refuse_flushes = 0

    def send(self, failures: Sequence[Failure]) -> None:
        self.log.append(("dead-letter", [f.message.offset for f in failures]))

    def flush(self, timeout: float) -> None:
        if self.refuse_flushes:
            self.refuse_flushes -= 1
            self.log.append(("flush-failed",))
            raise KafkaUnavailable("broker down")
        self.log.append(("flush",))


def make_service(
    batches: list[list[Message]], log: list[Any], *, transient: int = 0, end: int = 0
) -> tuple[Service, FakeConsumer]:
    settings = Settings(
        topics=("t",), service={"retry_initial": 0.001, "retry_max": 0.002, "poll_timeout": 0.01}
    )
    consumer = FakeConsumer(batches, log, end)
    ticks = itertools.count(0.0, 0.5)
    service = Service(
        settings,
        FakeApplier(log, transient),
        consumer,  # type: ignore[arg-type]
        FakeProducer(log),  # type: ignore[arg-type]
        clock=lambda: next(ticks),
    )
    return service, consumer


def test_batch_order_is_db_commit_then_dead_letters_then_kafka_commit() -> None:
    log: list[Any] = []
    bad = msg(41, value=b"garbage")
    service, consumer = make_service([[msg(40), bad, msg(7, partition=1)]], log, end=42)
    stats = service.run(until_idle=1.0)
    assert consumer.stored == {("t", 0): 40}, "assignment asked the target"
    assert log[:4] == [
        ("db-commit", [40, 41, 7], {("t", 0): 42, ("t", 1): 8}),
        ("dead-letter", [41]),
        ("flush",),
        ("kafka-commit", {("t", 0): 42, ("t", 1): 8}),
    ]
    assert log[-1] == ("close",)
    assert stats.applied == 2 and stats.failures_by_reason == {"undecodable": 1}


def test_undelivered_dead_letters_are_retried_before_the_kafka_commit() -> None:
    log: list[Any] = []
    service, _ = make_service([[msg(1, value=b"garbage")]], log, end=2)
    service._producer.refuse_flushes = 2  # type: ignore[attr-defined]
    service.run(until_idle=1.0)
    assert [entry[0] for entry in log[:6]] == [
        "db-commit",
        "dead-letter",
        "flush-failed",
        "flush-failed",
        "flush",
        "kafka-commit",
    ]


def test_transient_db_error_retries_the_same_batch_without_committing_kafka() -> None:
    log: list[Any] = []
    service, _ = make_service([[msg(1), msg(2)], [msg(3)]], log, transient=2, end=4)
    service.run(until_idle=1.0)
    kinds = [entry[0] for entry in log]
    assert kinds[:3] == ["db-error", "db-error", "db-commit"]
    assert log[2][1] == [1, 2], "the retried batch is the same batch"
    assert kinds.index("kafka-commit") > 2, "no Kafka commit before the database commit"
    assert kinds.count("db-commit") == 2


def test_stop_while_retrying_abandons_the_batch_uncommitted() -> None:
    log: list[Any] = []
    service, _ = make_service([[msg(1)]], log, transient=10**6)
    service._applier.on_error = service.stop  # type: ignore[attr-defined]  # SIGTERM, DB down
    stats = service.run()
    stored = ("kafka-commit", {("t", 0): 40})  # what the target held already: a copy, fine
    assert all(entry[0] in ("db-error", "close") or entry == stored for entry in log), log
    assert stats.batches == 0


def test_stored_offsets_adopted_on_assignment_reach_kafka_on_a_quiet_stream() -> None:
    """After a crash between the target and the Kafka commit, the new owner's Kafka copy
    must catch up although no message arrives (found by the chaos run: lag tools showed
    applied messages as unread on quiet partitions)."""
    log: list[Any] = []
    service, _ = make_service([], log, end=40)
    service.run(until_idle=1.0)
    assert log[0] == ("kafka-commit", {("t", 0): 40}), log
    assert log[-1] == ("close",)


def test_refused_kafka_commit_is_retried_with_the_next_batch_and_on_revoke() -> None:
    log: list[Any] = []
    service, consumer = make_service([[msg(1)], [msg(5, partition=1)]], log, end=6)
    consumer.refuse_commits = 2
    service.run(until_idle=1.0)
    commits = [entry[1] for entry in log if entry[0] == "kafka-commit"]
    assert commits == [{("t", 0): 2, ("t", 1): 6}], "pending offsets committed at revocation"


def test_a_commit_kafka_refuses_later_is_sent_again_on_a_quiet_stream() -> None:
    """Commits are asynchronous (a synchronous one waits out a missing coordinator: the
    stall after a broker restart, issue 16); a refusal reported at a later poll makes the
    offsets pending again."""
    log: list[Any] = []
    service, consumer = make_service([[msg(1)]], log, end=2)
    consumer.refused_later = [{("t", 0): 2}]
    service.run(until_idle=3.0)
    commits = [entry[1] for entry in log if entry[0] == "kafka-commit"]
    assert commits == [{("t", 0): 2}, {("t", 0): 2}], commits


def test_commit_failures_keep_only_the_newest_offset_sent() -> None:
    failures = CommitFailures()
    failures.sent({("t", 0): 10, ("t", 1): 5})
    failures.sent({("t", 0): 20})
    refused = "Broker: Not coordinator"
    failures.on_commit(refused, [tp("t", 0, 10), tp("t", 1, 5)])  # the older request
    assert failures.take() == {("t", 1): 5}, "a refusal of 10 must not undo 20"
    failures.on_commit(None, [tp("t", 0, 20, error="Broker: Request timed out")])
    assert failures.take() == {("t", 0): 20} and failures.take() == {}
    failures.on_commit(None, [tp("t", 0, 20)])  # accepted
    assert failures.take() == {}


def tp(topic: str, partition: int, offset: int, error: str | None = None) -> Any:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset, error=error)


def test_until_idle_needs_the_idle_period_and_the_end_of_the_log() -> None:
    service, consumer = make_service([], [], end=9)
    consumer.subscribe(["t"], stored_offsets=lambda p: {}, before_revoke=lambda p: None)
    consumer.positions = lambda: {("t", 0): 9, ("t", 1): 9}  # type: ignore[method-assign]
    assert not service._idle(100.0), "no message for a while is not yet 100 s"
    consumer.positions = lambda: {("t", 0): 8, ("t", 1): 9}  # type: ignore[method-assign]
    assert not service._idle(0.0), "a partition behind its end is not idle"
    consumer.positions = lambda: {("t", 0): 9, ("t", 1): 9}  # type: ignore[method-assign]
    assert service._idle(0.0)
    consumer.joined = False
    assert not service._idle(0.0), "not idle before the group assigned us anything"


def test_batch_limit_asks_for_fewer_messages_when_they_are_big() -> None:
    limit = BatchLimit(10_000, 32 << 20)
    assert limit.next() == 8192  # before any message: a 4 kB guess
    limit.observe([1_000] * 500)
    assert limit.next() == 10_000  # small messages: the count is the limit
    limit.observe([40_000] * 10)
    big = limit.next()
    assert big * limit.average <= 32 << 20 and big < 2_000
    limit.observe([])  # an empty poll changes nothing
    assert limit.next() == big
    huge = BatchLimit(10_000, 1 << 20)
    huge.observe([50 << 20])
    assert huge.next() == 1  # never zero


def test_consumer_prefetch_is_bounded_and_the_user_may_change_it() -> None:
    ours = consumer_config(Settings(), lambda error: None)
    assert ours["queued.max.messages.kbytes"] == 16384 and ours["fetch.queue.backoff.ms"] == 10
    theirs = consumer_config(
        Settings(kafka={"queued.max.messages.kbytes": "65536"}), lambda error: None
    )
    assert theirs["queued.max.messages.kbytes"] == "65536"
