"""The workload through the real Debezium connector and cdc-recon: the target equals the
source row for row, every change applied exactly once; and how fast events go through."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.e2e.pipeline import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PLACEHOLDER = b"__debezium_unavailable_value"


def placeholder_messages(pipeline: Pipeline, topic: str) -> int:
    """Messages of `topic` that carry Debezium's unchanged-TOAST placeholder."""
    consumer = Consumer(
        {"bootstrap.servers": pipeline.endpoints.kafka_bootstrap, "group.id": "peek"}
    )
    ends = {p: h for (t, p), h in pipeline.high_watermarks().items() if t == topic}
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    seen, found = dict.fromkeys(ends, 0), 0
    deadline = time.monotonic() + 60
    try:
        while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            seen[msg.partition()] = msg.offset() + 1
            found += PLACEHOLDER in (msg.value() or b"")
    finally:
        consumer.close()
    return found


def test_workload_arrives_row_for_row_exactly_once(
    pipeline: Pipeline, record: Callable[..., object]
) -> None:
    service = pipeline.start_service()
    work = pipeline.workload(count=6000, rate=0, seed=1).start()
    summary = work.join()
    expected_messages = summary.total + summary.by_kind()["delete"]  # + tombstones
    published_at = pipeline.wait(
        lambda: pipeline.published() >= expected_messages and time.monotonic(),
        "Debezium to publish every change",
        120,
    )
    converged_at = pipeline.wait_converged()

    assert pipeline.published() == expected_messages
    assert pipeline.changelog_count() == summary.total
    lost, unexpected = pipeline.exactly_once()
    assert not lost and not unexpected, (sorted(lost)[:5], sorted(unexpected)[:5])
    assert pipeline.failures() == []
    assert pipeline.diff().rows > 1000
    assert placeholder_messages(pipeline, pipeline.topics[0]) > 0, "no unchanged-TOAST update"
    assert_stage_report_on_timeout(pipeline, expected_messages)
    assert service.stop() == 0, service.stderr[-3000:]

    source_seconds = work.finished - work.started
    debezium = summary.total / (published_at - work.started)
    end_to_end = summary.total / (converged_at - work.started)
    record(
        "no fault (unthrottled workload)",
        summary.total,
        converged_at - work.finished,
        end_to_end,
        f"source {summary.total / source_seconds:.0f} changes/s, "
        f"Debezium published {debezium:.0f} events/s",
    )


def assert_stage_report_on_timeout(pipeline: Pipeline, published: int) -> None:
    """A wait that times out says which stage stalled and what each stage holds."""
    with pytest.raises(pytest.fail.Exception) as timed_out:
        pipeline.wait(lambda: False, "something that never happens", 0)
    text = str(timed_out.value)
    assert "no stage is behind" in text, text
    assert f"published (topic end offsets): {published}:" in text, text
    assert f"ledger: {pipeline.changelog_count()}" in text, text
    assert "RUNNING" in text and "last lines of Kafka Connect" in text, text
    assert "last lines of cdc-recon 0" in text and "assigned" in text, text


def test_backlog_throughput_of_debezium_and_of_cdc_recon(
    pipeline: Pipeline, record: Callable[..., object]
) -> None:
    """Each stage alone on a backlog: the source with the connector paused, then Debezium
    with no consumer, then cdc-recon draining what Debezium published."""
    pipeline.stack.run("connector", "pause", pipeline.name)
    summary = pipeline.workload(count=6000, rate=0, seed=2).start().join()
    source_rate = summary.total / summary.seconds
    expected_messages = summary.total + summary.by_kind()["delete"]

    resumed = time.monotonic()
    pipeline.stack.run("connector", "resume", pipeline.name)
    published_at = pipeline.wait(
        lambda: pipeline.published() >= expected_messages and time.monotonic(),
        "Debezium to publish the backlog",
        120,
    )
    started = time.monotonic()
    service = pipeline.start_service()
    converged_at = pipeline.wait_converged()

    lost, unexpected = pipeline.exactly_once()
    assert not lost and not unexpected
    assert service.stop() == 0
    debezium = expected_messages / (published_at - resumed)
    service_rate = expected_messages / (converged_at - started)
    record(
        "backlog, one stage at a time",
        summary.total,
        converged_at - started,
        service_rate,
        f"source alone {source_rate:.0f} changes/s, Debezium alone {debezium:.0f} events/s, "
        f"cdc-recon alone {service_rate:.0f} events/s incl. group join",
    )
