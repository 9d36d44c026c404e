"""The trace's assembly and row comparison, and the completeness sums (pure logic)."""

from __future__ import annotations

import datetime as dt

from cdc_recon.sweep.completeness import OVERALL, TableCompleteness, combine
from cdc_recon.trace.model import NEVER_PUBLISHED, Evidence, assemble, compare_rows

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_changes_merge_by_id_in_source_order_with_their_messages() -> None:
    evidence = Evidence(
        ledger=[
            {
                "change_id": "t:k:2",
                "source_ts": at(2),
                "tx": "2",
                "op": "u",
                "position": [20],
                "topic": "cdc",
                "kafka_partition": 0,
                "kafka_offset": 9,
                "outcome": "superseded",
            },
        ],
        changelog=[
            {"change_id": "t:k:1", "changed_at": at(1), "tx": "1", "op": "c"},
            {"change_id": "t:k:2", "changed_at": at(2), "tx": "2", "op": "u"},
            {"change_id": "t:k:3", "changed_at": at(3), "tx": "3", "op": "d"},
        ],
        failures=[
            {
                "change_id": "t:k:1",
                "topic": "cdc",
                "kafka_partition": 0,
                "kafka_offset": 4,
                "id": 5,
                "reason": "invalid",
                "status": "retried",
                "retry_outcome": "duplicate",
            },
        ],
        missed=[
            {
                "change_id": "t:k:3",
                "changed_at": at(3),
                "status": "pending",
                "reason": "not in the ledger",
            }
        ],
    )
    first, second, third = assemble(evidence)
    assert [c.change_id for c in (first, second, third)] == ["t:k:1", "t:k:2", "t:k:3"]
    assert (first.op, first.outcome, first.messages[0].where()) == (
        "insert",
        "duplicate",
        "cdc[0]@4",
    )
    assert second.outcome == "superseded" and second.position == [20] and second.in_changelog
    assert third.op == "delete" and third.verdict == f"missed, pending, {NEVER_PUBLISHED}"


def test_an_undecodable_message_is_a_change_of_its_own() -> None:
    (only,) = assemble(
        Evidence(
            failures=[
                {
                    "topic": "cdc",
                    "kafka_partition": 1,
                    "kafka_offset": 7,
                    "id": 1,
                    "reason": "undecodable",
                    "status": "open",
                }
            ]
        )
    )
    assert only.change_id == "undecoded:cdc[1]@7" and "quarantined (open)" in only.verdict


def test_rows_are_compared_by_target_names() -> None:
    pairs = [("id", "id"), ("name", "full_name"), ("n", "n")]
    same = compare_rows({"id": 1, "name": "a", "n": 2}, {"id": 1, "full_name": "a", "n": 2}, pairs)
    assert same.differing == () and same.as_dict()["equal"]
    drift = compare_rows({"id": 1, "name": "a", "n": 2}, {"id": 1, "full_name": "b", "n": 2}, pairs)
    assert drift.differing == ("full_name",)
    gone = compare_rows(None, {"id": 1, "full_name": "b", "n": 2}, pairs)
    assert gone.differing == ("id", "full_name", "n") and not gone.as_dict()["equal"]
    assert compare_rows(None, None, pairs).as_dict()["equal"]


def test_completeness_over_tables() -> None:
    a = TableCompleteness("a", 1000, 2, at(5))
    b = TableCompleteness("b", 3000, 0, at(9))
    assert (a.ratio, b.ratio) == (0.998, 1.0)
    overall = combine([a, b])
    assert (overall.table, overall.verified, overall.missing) == (OVERALL, 4000, 2)
    assert overall.ratio == 3998 / 4000 and overall.oldest_unverified == at(5)
    assert TableCompleteness("c", 0, 0, None).ratio is None
    assert a.age_seconds(at(65)) == 60.0
