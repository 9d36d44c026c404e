"""Checks of shape and time: schema drift, referential integrity, temporal consistency,
and the business rules of the configuration."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from cdc_recon.config.reconcile_settings import BusinessRule
from cdc_recon.reconcile import check_sql
from cdc_recon.reconcile.checks import CheckContext
from cdc_recon.reconcile.checksums import ChecksumDiff
from cdc_recon.reconcile.dialects.canonical import compatible_families
from cdc_recon.reconcile.model import MISMATCH, SEVERITY, CheckResult, Finding
from cdc_recon.reconcile.tables import TableSpec

RULE_DIFFERENCES_KEPT = 1000


def schema_drift(spec: TableSpec) -> list[Finding]:
    """Columns missing or extra on the target, type, nullability and key differences."""
    source, target = spec.source_shape, spec.target_shape
    excluded = set(spec.config.exclude)
    mapped = {spec.target_name(c.name): c for c in source.columns if c.name not in excluded}
    found: list[Finding] = []

    def drift(problem: str, column: str | None, severity: str = "medium", **detail: Any) -> None:
        sev = "low" if severity == "low" else SEVERITY["schema"]
        found.append(
            Finding(
                spec.name,
                "schema",
                "schema",
                sev,
                columns=(column,) if column else (),
                detail={"problem": problem, **detail},
            )
        )

    for name, column in mapped.items():
        if name not in target.names:
            drift("missing in target", name)
            continue
        other = target.column(name)
        if spec.across_engines:
            kinds = spec.type_families(column.name)
            if not compatible_families(*kinds):
                drift(
                    "type family differs",
                    name,
                    source=column.type,
                    target=other.type,
                    families=list(kinds),
                )
        elif other.type != column.type:
            drift("type differs", name, source=column.type, target=other.type)
        if other.nullable != column.nullable:
            drift("nullability differs", name, source=column.nullable, target=other.nullable)
    for name in target.names:
        if name not in mapped and name not in {spec.target_name(c) for c in excluded}:
            drift("extra in target", name, "low")
    source_key = [spec.target_name(c) for c in source.primary_key]
    if source_key != list(target.primary_key):
        drift("primary key differs", None, source=source_key, target=list(target.primary_key))
    return found


def check_schema(ctx: CheckContext, spec: TableSpec) -> CheckResult:
    findings = schema_drift(spec)
    return CheckResult.of(spec.name, "schema", findings, stats={"columns": len(spec.compared)})


def check_integrity(ctx: CheckContext, spec: TableSpec) -> CheckResult:
    """Orphans in the target for each configured foreign key of this table."""
    findings = []
    keys = [fk for fk in ctx.settings.reconcile.foreign_keys if fk.table == spec.target]
    with ctx.target.connect() as conn:
        for fk in keys:
            count, shown = check_sql.orphans(
                conn, fk.table, fk.columns, fk.references, fk.ref_columns
            )
            if count:
                detail = {"references": fk.references, "orphans": count, "first": shown}
                findings.append(
                    Finding(
                        spec.name,
                        "integrity",
                        "orphan",
                        SEVERITY["orphan"],
                        columns=fk.columns,
                        detail=detail,
                    )
                )
    return CheckResult.of(spec.name, "integrity", findings, stats={"foreign_keys": len(keys)})


def check_temporal(ctx: CheckContext, spec: TableSpec) -> CheckResult:
    """Target rows older (stale) or newer (ahead) than the source's, and future times."""
    column = spec.config.temporal_column
    if column is None:
        return CheckResult.of(spec.name, "temporal", [], stats={"skipped": "no temporal_column"})
    only = spec.only((column,))
    found = ChecksumDiff(
        only, ctx.source, ctx.target, ctx.settings.reconcile, workers=ctx.workers
    ).run()
    findings = []
    for diff in found.diffs:
        if diff.kind != MISMATCH:
            continue
        kind = "stale" if _older(diff.target_values[0], diff.source_values[0]) else "ahead"
        detail: dict[str, Any] = {"source": diff.source_values[0], "target": diff.target_values[0]}
        findings.append(
            Finding(
                spec.name,
                "temporal",
                kind,
                SEVERITY[kind],
                key=diff.key,
                columns=(spec.target_name(column),),
                detail=detail,
            )
        )
    tolerance = spec.config.future_tolerance
    with ctx.target.connect() as conn:
        future, latest = check_sql.future_rows(
            conn, spec.target_shape, spec.target_name(column), tolerance
        )
    if future:
        ahead = {"rows": future, "latest": str(latest), "tolerance_s": tolerance}
        findings.append(
            Finding(
                spec.name,
                "temporal",
                "future",
                SEVERITY["future"],
                columns=(spec.target_name(column),),
                detail=ahead,
            )
        )
    return CheckResult.of(spec.name, "temporal", findings, stats={"rows": found.rows})


def _older(target: str | None, source: str | None) -> bool:
    if target is None or source is None:
        return target is None
    return dt.datetime.fromisoformat(target) < dt.datetime.fromisoformat(source)


def compare_rule_rows(
    source: list[tuple[Any, ...]], target: list[tuple[Any, ...]], tolerance: float
) -> list[tuple[str, Any, Any]]:
    """(key JSON, source value, target value) of every key whose values differ by more
    than `tolerance` (numbers) or at all (anything else), or that one side lacks."""
    left = {_rule_key(row): row[-1] for row in source}
    right = {_rule_key(row): row[-1] for row in target}
    found = []
    for key in sorted(left.keys() | right.keys()):
        a, b = left.get(key), right.get(key)
        if key not in left or key not in right or not _close(a, b, tolerance):
            found.append((key, a, b))
    return found


def _rule_key(row: tuple[Any, ...]) -> str:
    return json.dumps([str(v) if v is not None else None for v in row[:-1]])


def _close(a: Any, b: Any, tolerance: float) -> bool:
    try:
        return abs(Decimal(str(a)) - Decimal(str(b))) <= Decimal(str(tolerance))
    except (InvalidOperation, TypeError, ValueError):
        return bool(a == b)


def check_rule(ctx: CheckContext, rule: BusinessRule) -> CheckResult:
    with ctx.source.connect() as s, ctx.target.connect() as t:
        left = check_sql.rule_rows(s, rule.source_query)
        right = check_sql.rule_rows(t, rule.target_query)
    differences = compare_rule_rows(left, right, rule.tolerance)
    findings = [
        Finding(
            rule.name,
            "rules",
            "rule",
            rule.severity,
            key=key,
            detail={
                "source": str(a) if a is not None else None,
                "target": str(b) if b is not None else None,
            },
        )
        for key, a, b in differences[:RULE_DIFFERENCES_KEPT]
    ]
    stats = {
        "source_rows": len(left),
        "target_rows": len(right),
        "differences": len(differences),
        "tolerance": rule.tolerance,
    }
    return CheckResult.of(rule.name, "rules", findings, stats=stats)
