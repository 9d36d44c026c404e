"""The completeness figure from real sweeps over real gaps (the sweeper test's scenario).

Detect only first: the share of verified changes that arrived is exactly (all - missed
and not superseded) / all, the missing count is the missed changes, the oldest
unverified change is the oldest of them. After the replay: complete, and the oldest
unverified change is the watermark. A second sweep over nothing new counts nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient

from cdc_recon.monitor.figures import control_figures
from cdc_recon.sweep.completeness import OVERALL, Completeness
from cdc_recon.sweep.sweeper import sweep_once
from tests.conftest import Database, Services
from tests.integration.test_sweeper import Scenario, publish_with_gaps

pytestmark = pytest.mark.integration


@pytest.fixture
def scenario(
    services: Services, source_db: Database, target_db: Database, topic_factory: Callable[..., str]
) -> Scenario:
    return Scenario(services, source_db, target_db, topic_factory)


def figures(scenario: Scenario) -> Completeness:
    settings = scenario.settings()
    found = control_figures(
        scenario.target.engine, settings.control_schema, settings.group_id, settings
    )
    return found.completeness


def test_completeness_counts_what_the_sweeper_verified(
    scenario: Scenario, services: Services, kafka_admin: AdminClient
) -> None:
    changes = scenario.workload(transactions=70, keys=100, seed=11)
    gaps = publish_with_gaps(scenario, changes, services, kafka_admin)
    expected = gaps.expected_missed()
    assert figures(scenario).tables == ()  # nothing swept: nothing claimed

    detected = sweep_once(scenario.settings(), replay=False)
    assert detected.in_flight == 0 and set(detected.missed_ids) == expected
    found = figures(scenario)
    (table,) = found.tables
    assert (table.table, table.verified, table.missing) == (
        scenario.table,
        len(changes),
        len(expected),
    )
    assert table.ratio == (len(changes) - len(expected)) / len(changes)
    lost_at = min(c.at_ms for c in changes if c.change_id in expected)
    assert table.oldest_unverified is not None
    assert abs(table.oldest_unverified.timestamp() * 1000 - lost_at) < 5  # ms rounding
    assert found.overall.table == OVERALL and found.overall.ratio == table.ratio

    replayed = sweep_once(scenario.settings())
    assert replayed.replayed == len(expected) and replayed.applied == 0  # nothing new
    (table,) = figures(scenario).tables
    assert (table.verified, table.missing, table.ratio) == (len(changes), 0, 1.0)
    watermark = scenario.control("SELECT max(swept_until) FROM {s}.sweeper_watermark")[0][0]
    assert table.oldest_unverified == watermark
