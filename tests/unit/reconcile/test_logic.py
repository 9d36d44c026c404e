"""Pure logic of reconciliation: diff classification, segments, sampling maths, SQL builders."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_recon.config import load_settings
from cdc_recon.exceptions import ConfigError
from cdc_recon.reconcile.corrections import plan
from cdc_recon.reconcile.diff import diff_rows
from cdc_recon.reconcile.expressions import (
    Params,
    SideSql,
    bucket,
    key_in,
    key_range,
    normalised,
)
from cdc_recon.reconcile.model import CheckResult, Finding, RowDiff, RowImage
from cdc_recon.reconcile.sampling import error_interval, fpc, sample_size, verdict, z_score
from cdc_recon.reconcile.segments import (
    Segment,
    children,
    integer_thresholds,
    mismatched,
    stripe_count,
    stripes,
)
from cdc_recon.reconcile.structure import compare_rule_rows

COLUMNS = ("name", "amount")


def image(key: int, name: str | None, amount: str | None) -> RowImage:
    return RowImage(f"[{key}]", (name, amount), f"h{key}{name}{amount}")


def test_diff_classifies_missing_extra_and_mismatched_columns() -> None:
    source = [image(1, "a", "1.5"), image(2, "b", "2"), image(3, "c", None)]
    target = [image(2, "b", "3"), image(3, "", None), image(4, "d", "4")]
    found = {d.key: d for d in diff_rows(source, target, COLUMNS)}
    assert found["[1]"].kind == "missing"
    assert found["[4]"].kind == "extra" and found["[4]"].target_hash == "h4d4"
    assert found["[2]"].columns == ("amount",)
    assert (found["[2]"].source_values, found["[2]"].target_values) == (("2",), ("3",))
    assert found["[3]"].columns == ("name",)  # NULL is not ''
    assert len(found) == 4


def test_equal_rows_give_no_diff() -> None:
    rows = [image(i, str(i), None) for i in range(5)]
    assert diff_rows(rows, list(reversed(rows)), COLUMNS) == []


values = st.one_of(st.none(), st.text(max_size=3))
tables = st.dictionaries(st.integers(0, 30), st.tuples(values, values), max_size=25)


@given(tables, tables)
def test_applying_the_diff_makes_the_target_equal_the_source(
    source: dict[int, tuple[str | None, str | None]],
    target: dict[int, tuple[str | None, str | None]],
) -> None:
    left = [RowImage(f"[{k}]", v, "s") for k, v in source.items()]
    right = [RowImage(f"[{k}]", v, "t") for k, v in target.items()]
    fixed = {f"[{k}]": v for k, v in target.items()}
    original = {f"[{k}]": v for k, v in source.items()}
    for d in diff_rows(left, right, COLUMNS):
        if d.kind == "extra":
            del fixed[d.key]
        else:
            fixed[d.key] = original[d.key]
    assert fixed == original
    assert len(diff_rows(left, right, COLUMNS)) == len(
        set(source) ^ set(target) | {k for k in set(source) & set(target) if source[k] != target[k]}
    )


def test_row_values_are_validated() -> None:
    with pytest.raises(ValueError):
        RowImage("1", (), "h")
    with pytest.raises(ValueError):
        RowDiff("mismatch", "[1]")
    with pytest.raises(ValueError):
        CheckResult("t", "counts", "PASS", (Finding("t", "counts", "count", "high"),))


@given(st.integers(-(10**12), 10**12), st.integers(0, 10**6), st.integers(2, 64))
def test_integer_thresholds_split_inside_the_range(lo: int, width: int, parts: int) -> None:
    points = integer_thresholds(lo, lo + width, parts)
    assert points == sorted(set(points))
    assert all(lo < p < lo + width for p in points)
    assert len(points) <= parts - 1
    if width >= parts:
        assert len(points) == parts - 1


def test_a_big_table_is_read_in_one_scan_per_two_workers() -> None:
    assert stripe_count(10_000_000, 100_000, 2) == 1
    assert stripe_count(10_000_000, 100_000, 8) == 4
    assert stripe_count(10_000_000, 100_000, 3) == 2
    assert stripe_count(150_000, 100_000, 8) == 2  # no stripe under segment_rows
    assert stripe_count(0, 100_000, 4) == 1


@given(st.integers(0, 300), st.integers(1, 40), st.integers(0, 10**6))
def test_stripes_partition_the_points(points: int, parts: int, rows: int) -> None:
    keys = [(i * 10,) for i in range(points)]
    found = stripes(keys, parts, rows)
    assert 1 <= len(found) <= min(parts, points + 1)
    assert found[0][0].lo is None and found[-1][0].hi is None
    for (left, _), (right, _) in zip(found, found[1:], strict=False):
        assert left.hi == right.lo is not None
    for segment, inner in found:  # every threshold lies strictly inside its stripe
        assert all(segment.lo is None or segment.lo < t for t in inner)
        assert all(segment.hi is None or t < segment.hi for t in inner)
    bounds = [s.lo for s, _ in found[1:]]
    assert sorted(bounds + [t for _, inner in found for t in inner]) == keys


def test_children_cover_the_mismatched_buckets() -> None:
    parent = Segment((0,), (100,), 100, depth=1)
    kids = children(parent, [(25,), (50,), (75,)], [(0, 25), (3, 30)])
    assert [(k.lo, k.hi, k.rows, k.depth) for k in kids] == [
        ((0,), (25,), 25, 2),
        ((75,), (100,), 30, 2),
    ]


def test_mismatched_compares_counts_and_checksums() -> None:
    source = {0: (10, "5"), 1: (10, "6"), 2: (3, "1")}
    target = {0: (10, "5"), 1: (10, "7"), 3: (1, "9")}
    assert mismatched(source, target) == [(1, 10), (2, 3), (3, 1)]


def test_sample_size_known_values_and_correction() -> None:
    assert math.isclose(z_score(0.95), 1.959964, rel_tol=1e-6)
    assert sample_size(1_000_000, confidence=0.95, margin=0.01) == 9513
    assert sample_size(1000, confidence=0.95, margin=0.05) == 278
    assert sample_size(10, confidence=0.99, margin=0.01) == 10
    assert sample_size(0, confidence=0.95, margin=0.01) == 0


@given(st.integers(1, 10**7), st.floats(0.5, 0.999), st.floats(0.001, 0.2))
def test_sample_size_never_exceeds_population(population: int, conf: float, margin: float) -> None:
    n = sample_size(population, confidence=conf, margin=margin)
    assert 1 <= n <= population
    assert n <= sample_size(population + 1000, confidence=conf, margin=margin)


@given(st.integers(0, 500), st.integers(1, 500), st.integers(0, 10**6))
def test_error_interval_contains_the_observed_rate(errors: int, sampled: int, extra: int) -> None:
    errors = min(errors, sampled)
    low, high = error_interval(errors, sampled, sampled + extra, 0.95)
    assert 0.0 <= low <= errors / sampled + 1e-12
    assert errors / sampled - 1e-12 <= high <= 1.0


def test_finite_population_narrows_the_interval() -> None:
    assert fpc(1000, 1000) == 0.0
    small = error_interval(5, 900, 1000, 0.95)
    large = error_interval(5, 900, 10**7, 0.95)
    assert small[1] - small[0] < large[1] - large[0]
    assert "consistent" in verdict(0, 9513, 10**6, confidence=0.95, margin=0.01).recommendation
    assert "checksums" in verdict(50, 100, 10**6, confidence=0.95, margin=0.01).recommendation


def test_normalisation_rules() -> None:
    assert normalised('"a"', "numeric") == 'trim_scale("a")'
    assert normalised('"t"', "timestamptz") == "(\"t\" AT TIME ZONE 'UTC')"
    assert normalised('"j"', "json") == '"j"::jsonb'
    assert normalised('"i"', "int8") == '"i"'


def side(*keys: tuple[str, str, str]) -> SideSql:
    return SideSql.build("s.t", list(keys), [("amount", "numeric")], "md5")


def test_predicates_bind_every_value() -> None:
    one = side(("id", "bigint", "int8"))
    params = Params()
    where = key_range(one, (5,), (9,), params)
    assert where == '"id" >= %(p0)s AND "id" < %(p1)s' and params == {"p0": 5, "p1": 9}
    params = Params()
    assert bucket(one, [("x'); DROP",)], params) == 'width_bucket("id", %(p0)s::bigint[])'
    two = side(("a", "text", "text"), ("b", "integer", "int4"))
    params = Params()
    assert key_in(two, [("x", 1)], params) == '("a", "b") IN ((%(p0)s, %(p1)s))'
    case = bucket(two, [("m", 1), ("n", 2)], Params())
    assert case.startswith("CASE WHEN") and case.endswith("ELSE 2 END")
    assert "md5(ROW(" in two.row_hash() and key_range(two, None, None, Params()) == "true"


def test_rule_rows_compare_within_tolerance() -> None:
    source = [("a", 10.0), ("b", 5), ("c", "x")]
    target = [("a", 10.004), ("b", 6), ("d", 1)]
    found = compare_rule_rows(source, target, 0.01)
    assert [k for k, _, _ in found] == ['["b"]', '["c"]', '["d"]']


def test_corrections_plan_sends_extras_to_review_unless_deleting() -> None:
    rows = [
        {
            "id": 1,
            "table_name": "t",
            "type": "missing",
            "key": "[1]",
            "columns": [],
            "target_hash": None,
        },
        {
            "id": 2,
            "table_name": "t",
            "type": "extra",
            "key": "[2]",
            "columns": [],
            "target_hash": "7",
        },
        {
            "id": 3,
            "table_name": "t",
            "type": "mismatch",
            "key": "[3]",
            "columns": ["a"],
            "target_hash": "8",
        },
    ]
    assert [c.kind for c in plan(rows)] == ["insert", "review", "update"]
    assert [c.kind for c in plan(rows, delete_extras=True)] == ["insert", "delete", "update"]
    assert plan(rows)[2].describe() == "update t [3] set a"


def test_reconcile_settings_reject_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="reconcile.tables.0.colour"):
        load_settings(reconcile={"tables": [{"source": "a.b", "colour": 1}]})
    with pytest.raises(ConfigError, match="reconcile.hash"):
        load_settings(reconcile={"hash": "sha1"})
    settings = load_settings(
        reconcile={
            "foreign_keys": [
                {"table": "s.o", "columns": ["c"], "references": "s.c", "ref_columns": ["id"]}
            ]
        }
    )
    assert settings.reconcile.workers == 2 and settings.reconcile.hash == "fast64"
    assert settings.reconcile.schedule.counts == 900


def test_fast64_hashes_by_kind_and_falls_back_to_text() -> None:
    from cdc_recon.reconcile.expressions import column_hash

    assert column_hash('"n"', "numeric", 3, True).startswith(
        'coalesce(hash_numeric_extended("n", 3)'
    )
    assert "timestamp_hash_extended((\"t\" AT TIME ZONE 'UTC'), 2)" in column_hash(
        '"t"', "timestamptz", 2, True
    )
    assert column_hash('"n"', "numeric", 3, False).startswith(
        'coalesce(hashtextextended((trim_scale("n"))::text, 3)'
    )
    fast = SideSql.build("s.t", [("id", "bigint", "int8")], [("b", "bool")])
    assert fast.row_hash().count(" # ") == 1 and "hashint8extended" in fast.row_hash()


def test_metrics_count_findings_drift_and_duration() -> None:
    from prometheus_client import REGISTRY

    from cdc_recon.reconcile import metrics

    labels = {"table": "m.t", "type": "missing", "severity": "high"}
    before = REGISTRY.get_sample_value("reconciliation_inconsistencies_total", labels) or 0.0
    finding = Finding("m.t", "checksums", "missing", "high", key="[1]")
    result = CheckResult.of(
        "m.t", "checksums", [finding, finding], stats={"drift_percentage": 2.5}, seconds=0.2
    )
    metrics.observe(result)
    metrics.corrected("m.t", "insert", 3)
    assert REGISTRY.get_sample_value("reconciliation_inconsistencies_total", labels) == before + 2
    assert REGISTRY.get_sample_value("data_drift_percentage", {"table": "m.t"}) == 2.5
    count = REGISTRY.get_sample_value(
        "reconciliation_duration_seconds_count", {"job_type": "checksums"}
    )
    assert count is not None and count >= 1
    corrections = REGISTRY.get_sample_value(
        "reconciliation_auto_corrections_total", {"table": "m.t", "correction_type": "insert"}
    )
    assert corrections is not None and corrections >= 3
