"""The short chaos run: a few faults at seeded random moments, each followed by the checks.

The long run is `python bench/chaos.py --faults 120`; this one runs one fault of each
kind that has no test of its own (kill -9 and the broker restart have theirs, in
test_faults.py and test_broker_restart.py) on the session's private stack, three
instances in one group, and asserts what the long one reports: every fault converged,
nothing lost, nothing applied twice, no position went backwards, every correction kept
its images, and each crash point really killed its process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.chaos import ChaosRun, configure
from tests.e2e.faults import Cluster
from tests.e2e.pipeline import Endpoints, Pipeline
from tests.e2e.processes import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

KINDS = ["kill@db_commit", "kill@sweep", "kill@replay", "kill@reconcile", "restart_pg"]


def test_a_fault_of_each_kind_converges_exactly_once(
    make_private_pipeline: Callable[..., Pipeline],
    private_stack: tuple[Stack, Endpoints],
    tmp_path: Path,
) -> None:
    stack, _ = private_stack
    pipeline = make_private_pipeline(partitions=3)
    configure(pipeline)
    run = ChaosRun(pipeline, Cluster(pipeline, stack, tmp_path), seed=16, rate=150)
    episodes = run.run(KINDS)
    print("\n" + "\n".join(e.line() for e in episodes) + "\n" + run.summary())
    print(run.result())

    assert [e.kind for e in episodes] == KINDS
    assert all(e.converge_s is not None for e in episodes), run.result()
    assert [e.problems for e in episodes] == [[]] * len(KINDS)
    crashed = [e.kind for e in episodes if e.killed]
    assert crashed == KINDS[:4], [e.line() for e in episodes]
    assert " lost=0 doubled=0 regressed=0 " in run.result()
    assert run.result().endswith(f" kills={len(KINDS) - 1} with_problems=0")
