"""The dead-letter producer's decisions, without a broker: sizes, headers, the backlog.

librdkafka's producer is real but points at a closed port: nothing here is delivered;
what reaches the broker is tested in tests/integration/test_dead_letters.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cdc_recon.apply.dead_letters import chunk
from cdc_recon.batch import Failure, Message
from cdc_recon.config import Settings
from cdc_recon.kafka.producer import (
    BACKLOG_EVERY,
    HEADER_ROOM,
    MAX_DETAIL,
    STALE_AFTER,
    DeadLetterProducer,
    DeadLetterSizing,
    DeadLetterState,
    headers,
    needed_limit,
    wire_size,
)

SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1", dead_letter_topic="dlq")


def failure(offset: int, size: int = 10) -> Failure:
    return Failure(Message("orders", 0, offset, b"k", b"v" * size), "undecodable", "bad")


class Journal:
    def __init__(self, backlog: list[list[tuple[int, Failure]]]) -> None:
        self.pages = backlog
        self.asked: list[dict[str, Any]] = []
        self.recorded: list[tuple[Message, str, str | None]] = []

    def backlog(self, **asked: Any) -> tuple[list[tuple[int, Failure]], bool]:
        self.asked.append(asked)
        page = self.pages.pop(0) if self.pages else []
        return page, bool(self.pages)

    def record(self, outcomes: Sequence[tuple[Message, str, str | None]]) -> None:
        self.recorded.extend(outcomes)


def test_the_dead_letter_topic_is_sized_to_the_largest_topic_read_plus_headers() -> None:
    assert needed_limit({"a": 4 << 20, "b": 1000}, 1_048_588) == (4 << 20) + HEADER_ROOM
    assert needed_limit({"later": None}, 1_048_588) == 1_048_588 + HEADER_ROOM
    assert needed_limit({}, 1_048_588) == 1_048_588 + HEADER_ROOM
    sizing = DeadLetterSizing("dlq", topic_limit=100_000, needed=200_000)
    assert sizing.producer_limit < 100_000, "librdkafka's batches stay within the topic"


def test_headers_stay_within_their_room_whatever_the_detail() -> None:
    long = Failure(Message("t", 1, 2, None, None), "rejected", "é" * 10_000 + "\ud800")
    values = dict(headers(long))
    detail = values["cdc_recon.detail"]
    assert isinstance(detail, bytes) and len(detail) <= MAX_DETAIL
    detail.decode()  # cut on a character, never inside one
    assert wire_size(long.message, headers(long)) < HEADER_ROOM
    odd = Failure(Message("t", 1, 2, None, None), "rejected", "lone \ud800 surrogate")
    assert b"\\ud800" in dict(headers(odd))["cdc_recon.detail"]  # type: ignore[operator]


def test_a_failure_over_the_limit_is_settled_too_large_and_never_produced() -> None:
    journal = Journal([])
    sizing = DeadLetterSizing("dlq", topic_limit=50_000, needed=50_000)
    producer = DeadLetterProducer(SETTINGS, sizing, journal=journal)
    assert producer.send([failure(7, size=60_000)]) == 1
    assert producer.pending == 0, "nothing queued for the broker"
    producer.flush(0.1)  # nothing in flight: returns, and records the outcome
    [(message, state, detail)] = journal.recorded
    assert (message.offset, state) == (7, DeadLetterState.TOO_LARGE)
    assert detail is not None and "50000" in detail and "dlq" in detail


def test_the_producer_honours_a_smaller_configured_limit() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", kafka={"message.max.bytes": "20000"})
    sizing = DeadLetterSizing("dlq", topic_limit=1 << 22, needed=1 << 22)
    assert DeadLetterProducer(settings, sizing).limit == 20_000


def test_the_backlog_is_read_in_chunks_all_at_first_then_only_stale_ones() -> None:
    big = 60_000  # too large to produce: settled at once, so no broker is needed
    pages = [[(1, failure(1, big)), (2, failure(2, big))], [(5, failure(5, big))]]
    journal = Journal(pages)
    now = [0.0]
    sizing = DeadLetterSizing("dlq", topic_limit=50_000, needed=50_000)
    producer = DeadLetterProducer(SETTINGS, sizing, journal=journal, clock=lambda: now[0])
    assert producer.send([]) == 2
    assert producer.send([]) == 1, "a full chunk: the pass goes on at once"
    assert producer.send([]) == 0, "the pass is over: the next look waits"
    assert [a["after_id"] for a in journal.asked] == [0, 2]
    assert {a["older_than"] for a in journal.asked} == {0.0}, "at start: every pending one"
    now[0] += BACKLOG_EVERY
    producer.send([])
    assert journal.asked[-1] == {**journal.asked[0], "older_than": STALE_AFTER}
    producer.flush(0.1)
    assert [m.offset for m, _, _ in journal.recorded] == [1, 2, 5]


def test_a_chunk_is_cut_by_bytes_but_always_takes_its_first_row() -> None:
    assert chunk([(1, 10), (2, 10), (3, 10)], 25) == [1, 2]
    assert chunk([(1, 100), (2, 1)], 25) == [1]
    assert chunk([], 25) == []
