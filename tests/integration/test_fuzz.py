"""The fuzz bench in small: every hostile family a few times among good changes, through
the real `cdc-recon run` (once, never restarted), accounted like `bench/fuzz.py` does.

A failure names the counters that are not zero and, per family, the partition/offset of
the messages that were lost, applied although hostile, quarantined although good, or
left without a dead letter, and the rows that differ from what the good changes leave.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench.fuzz import COUNTERS, Endpoints, Options, fuzz
from bench.fuzz_messages import HOSTILE, generate
from tests.conftest import Services

pytestmark = pytest.mark.integration

OPTIONS = Options(
    hostile=260,
    good=150,
    seed=20261204,
    partitions=4,
    keys=30,
    minimum=3,
    until_idle=3.0,
    deadline=150.0,
    keep=False,
)


def test_every_family_is_generated_a_few_times() -> None:
    batch = generate(
        seed=OPTIONS.seed,
        good=OPTIONS.good,
        hostile=OPTIONS.hostile,
        partitions=OPTIONS.partitions,
        keys=OPTIONS.keys,
        minimum=OPTIONS.minimum,
    )
    counts = Counter(message.family for message in batch.messages)
    assert {name: counts[name] for name in HOSTILE if counts[name] < 3} == {}
    assert counts["good_insert"] and counts["good_delete"] and counts["tombstone"]


def test_hostile_messages_never_crash_stall_or_corrupt_the_stream(services: Services) -> None:
    lines: list[str] = []
    result = fuzz(OPTIONS, Endpoints(services.kafka_bootstrap, services.target_url), lines.append)
    counters = result.counters()
    assert set(counters) == set(COUNTERS)
    failing = {name: count for name, count in counters.items() if count}
    assert not failing, f"{failing}\n{result.problems()}"
    assert not result.hostile_applied and not result.good_quarantined, result.problems()
    assert not result.forged_lines, result.problems()
    assert result.messages == sum(c["generated"] for c in result.table.values())
