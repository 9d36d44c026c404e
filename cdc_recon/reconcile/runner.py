"""`run_reconcile`: the checks of `cdc-recon reconcile`, persisted and exported.

1. open both databases (sessions in UTC, ISO output) and the control tables;
2. record the run in `recon_runs`; pair each configured table across the two catalogs;
3. submit one job per table to the run's `reconcile.workers` threads (`Workers`), and
   one per business rule: a table job runs the chosen checks in order (schema, counts,
   checksums, integrity, temporal, sample), and its checksum segments go to the same
   threads, so tables and segments are checked in parallel, never more than `workers`
   at once; a check that fails with an error is recorded as ERROR and the others go on;
4. on this thread, in table, check and rule order whatever finished first, record each
   result and its findings and count them in the Prometheus metrics; close the run with
   its status (PASS, FAIL or ERROR).

In incremental mode the checksum check of a table reads only the keys changed since
its last successful checksum run (minus `reconcile.incremental_overlap`), or the whole
table when there was none.

    >>> settings = load_settings("cdc-recon.yml")                # doctest: +SKIP
    >>> report = run_reconcile(settings, checks=["checksums"])   # doctest: +SKIP
    >>> report.status, [r.check for r in report.results]         # doctest: +SKIP
    ('FAIL', ['checksums'])
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from cdc_recon.config import Settings
from cdc_recon.config.reconcile_settings import BusinessRule
from cdc_recon.exceptions import CdcReconError, ConfigError, UsageError
from cdc_recon.reconcile import metrics, store
from cdc_recon.reconcile.anomalies import check_anomalies, ml_installed, require_ml
from cdc_recon.reconcile.checks import CheckContext, check_checksums, check_counts, check_sample
from cdc_recon.reconcile.model import CHECKS, ERROR, FAIL, PASS, CheckResult
from cdc_recon.reconcile.segment_sql import reconcile_engine
from cdc_recon.reconcile.structure import (
    check_integrity,
    check_rule,
    check_schema,
    check_temporal,
)
from cdc_recon.reconcile.tables import TableSpec, resolve_tables
from cdc_recon.reconcile.workers import Workers

TableCheck = Callable[[CheckContext, TableSpec], CheckResult]
TABLE_CHECKS: dict[str, TableCheck] = {
    "schema": check_schema,
    "counts": check_counts,
    "checksums": check_checksums,
    "integrity": check_integrity,
    "temporal": check_temporal,
    "sample": check_sample,
}
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class ReconcileReport:
    run_id: int
    mode: str
    results: tuple[CheckResult, ...]
    finding_ids: tuple[tuple[int, ...], ...]

    @property
    def status(self) -> str:
        states = {r.status for r in self.results}
        return ERROR if ERROR in states else FAIL if FAIL in states else PASS

    def as_dict(self, shown: int = 20) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "status": self.status,
            "findings": sum(len(r.findings) for r in self.results),
            "results": [r.as_dict(shown) for r in self.results],
        }


def parse_checks(names: Sequence[str]) -> list[str]:
    """`all` or check names, in canonical order; `UsageError` names an unknown one, or
    says how to install the `ml` extra that `anomalies` needs (which `all` then skips)."""
    chosen = set(names or ["all"])
    unknown = chosen - set(CHECKS) - {"all"}
    if unknown:
        raise UsageError(f"unknown check {sorted(unknown)[0]!r}", value=sorted(unknown)[0])
    if "anomalies" in chosen:
        require_ml()
    if "all" in chosen:
        return [c for c in CHECKS if c != "anomalies" or "anomalies" in chosen or ml_installed()]
    return [c for c in CHECKS if c in chosen]


def _timed(check: Callable[[], CheckResult], table: str, name: str) -> CheckResult:
    return _timed_all(lambda: [check()], table, name)[0]


def _timed_all(check: Callable[[], list[CheckResult]], table: str, name: str) -> list[CheckResult]:
    """The check's results with their share of its time; an error of the check (not of
    the configuration) becomes one ERROR result for `table`."""
    started = time.monotonic()
    try:
        results = check()
    except ConfigError:
        raise
    except (CdcReconError, sa.exc.SQLAlchemyError) as exc:
        message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        results = [CheckResult(table, name, ERROR, error=message)]
    seconds = (time.monotonic() - started) / max(len(results), 1)
    return [replace(result, seconds=seconds) for result in results]


def run_reconcile(
    settings: Settings,
    *,
    checks: Sequence[str] = ("all",),
    tables: list[str] | None = None,
    incremental: bool = False,
    progress: ProgressFactory | None = None,
) -> ReconcileReport:
    if settings.source_url is None:
        raise ConfigError(
            "config: source_url: reconcile needs the source database", key="source_url"
        )
    chosen = parse_checks(checks)
    workers = settings.reconcile.workers
    source = reconcile_engine(settings.source_url, name="source", workers=workers)
    target = reconcile_engine(settings.target_url, name="target", workers=workers)
    try:
        return _run(settings, source, target, chosen, tables, incremental, progress)
    finally:
        source.dispose()
        target.dispose()


def _run(
    settings: Settings,
    source: sa.Engine,
    target: sa.Engine,
    chosen: list[str],
    tables: list[str] | None,
    incremental: bool,
    progress: ProgressFactory | None,
) -> ReconcileReport:
    schema = settings.control_schema
    store.ensure_reconcile_tables(target, schema)
    mode = "incremental" if incremental else "full"
    run_id, _ = store.start_run(target, schema, ",".join(chosen), mode)
    done: list[tuple[CheckResult, tuple[int, ...]]] = []
    try:
        specs = resolve_tables(settings, source, target, tables) if _needs_tables(chosen) else []
        with Workers(settings.reconcile.workers) as workers:
            base = CheckContext(settings, source, target, workers=workers)
            jobs = [
                workers.submit(
                    functools.partial(_check_table, base, spec, chosen, incremental, progress)
                )
                for spec in specs
            ]
            if "rules" in chosen and not tables:
                jobs += [
                    workers.submit(functools.partial(_check_rule, base, rule))
                    for rule in settings.reconcile.rules
                ]
            if "anomalies" in chosen:
                jobs.append(workers.submit(functools.partial(_check_anomalies, base, tables)))
            for job in jobs:  # recorded in table and check order, whatever finished first
                for result, started in job.outcome():
                    metrics.observe(result)
                    ids = store.record_result(target, schema, run_id, result, started)
                    done.append((result, tuple(ids)))
    except BaseException:
        store.finish_run(target, schema, run_id, "aborted", sum(len(r.findings) for r, _ in done))
        raise
    report = ReconcileReport(run_id, mode, tuple(r for r, _ in done), tuple(ids for _, ids in done))
    store.finish_run(target, schema, run_id, report.status, sum(len(r.findings) for r, _ in done))
    return report


Timed = list[tuple[CheckResult, dt.datetime]]


def _check_table(
    ctx: CheckContext,
    spec: TableSpec,
    chosen: list[str],
    incremental: bool,
    progress: ProgressFactory | None,
) -> Timed:
    """The chosen checks of one table, in order (a job on the run's workers)."""
    if progress and "checksums" in chosen:
        ctx = replace(ctx, progress=progress(spec.name, spec.source_shape.estimated_rows))
    results: Timed = []
    for name in (c for c in chosen if c in TABLE_CHECKS):
        table_ctx = _with_since(ctx, spec, name) if incremental else ctx
        started = dt.datetime.now(dt.UTC)
        check = functools.partial(TABLE_CHECKS[name], table_ctx, spec)
        results.append((_timed(check, spec.name, name), started))
    return results


def _check_anomalies(ctx: CheckContext, tables: list[str] | None) -> Timed:
    started = dt.datetime.now(dt.UTC)
    check = functools.partial(check_anomalies, ctx, tables or ())
    return [(result, started) for result in _timed_all(check, "ledger", "anomalies")]


def _check_rule(ctx: CheckContext, rule: BusinessRule) -> Timed:
    started = dt.datetime.now(dt.UTC)
    return [(_timed(functools.partial(check_rule, ctx, rule), rule.name, "rules"), started)]


def _needs_tables(chosen: list[str]) -> bool:
    return any(c in TABLE_CHECKS for c in chosen)


def _with_since(ctx: CheckContext, spec: TableSpec, check: str) -> CheckContext:
    if check != "checksums":
        return ctx
    schema = ctx.settings.control_schema
    last = store.last_success(ctx.target, schema, spec.name, "checksums")
    if last is None:
        return ctx
    overlap = dt.timedelta(seconds=ctx.settings.reconcile.incremental_overlap)
    return replace(ctx, since=last - overlap)
