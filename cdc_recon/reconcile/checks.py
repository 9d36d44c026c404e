"""The row-level checks of one table: counts, checksums (full or incremental), sampling.

Each check returns a `CheckResult`; the runner times, persists and exports it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from cdc_recon.config import Settings
from cdc_recon.exceptions import ConfigError
from cdc_recon.reconcile import check_sql, sampling
from cdc_recon.reconcile import segment_sql as sql
from cdc_recon.reconcile.checksums import ChecksumDiff
from cdc_recon.reconcile.diff import diff_rows
from cdc_recon.reconcile.model import EXTRA, SEVERITY, CheckResult, Finding
from cdc_recon.reconcile.tables import TableSpec
from cdc_recon.reconcile.workers import Workers

Progress = Callable[[int], None]


@dataclass(frozen=True)
class CheckContext:
    """What every check needs: settings, both engines, the run's worker threads (for
    checks that fan out), and where to report progress."""

    settings: Settings
    source: sa.Engine
    target: sa.Engine
    progress: Progress | None = None
    since: dt.datetime | None = None  # incremental mode: rows changed since then
    workers: Workers | None = None  # None: a check that fans out brings its own


def check_counts(ctx: CheckContext, spec: TableSpec) -> CheckResult:
    """Row counts, in total and per configured group and date bucket."""
    config = spec.config
    bucket = (config.date_bucket.column, config.date_bucket.unit) if config.date_bucket else None
    target_groups = tuple(spec.target_name(c) for c in config.group_by)
    target_bucket = (spec.target_name(bucket[0]), bucket[1]) if bucket else None
    families = spec.pair_families(config.group_by) if spec.across_engines else None
    with ctx.source.connect() as s, ctx.target.connect() as t:
        totals = (
            check_sql.group_counts(s, spec.source_shape, (), None, families and [])[()],
            check_sql.group_counts(t, spec.target_shape, (), None, families and [])[()],
        )
        grouped = config.group_by or bucket
        left = check_sql.group_counts(s, spec.source_shape, config.group_by, bucket, families)
        right = check_sql.group_counts(t, spec.target_shape, target_groups, target_bucket, families)
    findings = []
    if totals[0] != totals[1]:
        findings.append(_count_finding(spec, "total", None, totals[0], totals[1]))
    if grouped:
        for group in sorted(left.keys() | right.keys(), key=str):
            a, b = left.get(group, 0), right.get(group, 0)
            if a != b:
                findings.append(_count_finding(spec, "group", list(group), a, b))
    stats = {"source_rows": totals[0], "target_rows": totals[1], "groups": len(left)}
    return CheckResult.of(spec.name, "counts", findings, stats=stats)


def _count_finding(
    spec: TableSpec, scope: str, group: list[str | None] | None, source: int, target: int
) -> Finding:
    detail = {"scope": scope, "group": group, "source": source, "target": target}
    return Finding(spec.name, "counts", "count", SEVERITY["count"], detail=detail)


def check_checksums(ctx: CheckContext, spec: TableSpec) -> CheckResult:
    """Every missing, extra and mismatched key, by segment checksums and bisection."""
    if ctx.since is not None:
        return _incremental(ctx, spec, ctx.since)
    found = ChecksumDiff(
        spec, ctx.source, ctx.target, ctx.settings.reconcile, ctx.progress, ctx.workers
    ).run()
    findings = [Finding.from_diff(spec.name, "checksums", d) for d in found.diffs]
    stats = {**found.as_dict(), "mode": "full", **_drift(len(findings), found.rows)}
    return CheckResult.of(spec.name, "checksums", findings, stats=stats)


def _drift(differences: int, rows: int) -> dict[str, float]:
    return {"drift_percentage": round(100.0 * differences / rows, 6) if rows else 0.0}


def _incremental(ctx: CheckContext, spec: TableSpec, since: dt.datetime) -> CheckResult:
    """Only the keys whose change time is at or after `since` on either side."""
    column = spec.config.updated_column
    if column is None:
        raise ConfigError(
            f"config: reconcile.tables: {spec.name} needs updated_column for --incremental"
        )
    source, target = spec.sides()
    with ctx.source.connect() as s, ctx.target.connect() as t:
        changed = source.dialect.quote_ident(column)
        keys = set(sql.changed_keys(s, source, changed, since))
        changed = target.dialect.quote_ident(spec.target_name(column))
        keys |= set(sql.changed_keys(t, target, changed, since))
        ordered = sorted(keys)
        left = sql.fetch_keys(s, source, ordered)
        right = sql.fetch_keys(t, target, ordered)
    diffs = diff_rows(left, right, spec.columns)
    findings = [Finding.from_diff(spec.name, "checksums", d) for d in diffs]
    stats = {"mode": "incremental", "since": since.isoformat(), "changed_keys": len(keys)}
    return CheckResult.of(spec.name, "checksums", findings, stats=stats)


def check_sample(ctx: CheckContext, spec: TableSpec) -> CheckResult:
    """A random sample of source keys compared on both sides, and what it says."""
    config = ctx.settings.reconcile
    source, target = spec.sides()
    with ctx.source.connect() as s, ctx.target.connect() as t:
        population = sql.count_rows(s, source)
        size = sampling.sample_size(
            population,
            confidence=config.sample_confidence,
            margin=config.sample_margin,
            proportion=config.sample_proportion,
        )
        keys = sql.sample_keys(s, source, size, population)
        left = sql.fetch_keys(s, source, keys)
        right = sql.fetch_keys(t, target, keys)
    diffs = [d for d in diff_rows(left, right, spec.columns) if d.kind != EXTRA]
    verdict = sampling.verdict(
        len(diffs),
        len(keys),
        population,
        confidence=config.sample_confidence,
        margin=config.sample_margin,
    )
    findings = [Finding.from_diff(spec.name, "sample", d) for d in diffs]
    stats = {
        "population": population,
        "sampled": verdict.sampled,
        "errors": verdict.errors,
        "error_rate": verdict.error_rate,
        "interval": list(verdict.interval),
        "confidence": config.sample_confidence,
        "recommendation": verdict.recommendation,
        "drift_percentage": round(100.0 * verdict.error_rate, 6),
    }
    return CheckResult.of(spec.name, "sample", findings, stats=stats)
