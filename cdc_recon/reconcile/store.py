"""Control tables of reconciliation, in the target's control schema, and their I/O.

    recon_runs         one row per `reconcile` run: checks, mode, status, counts
    recon_results      one row per table and check of a run: status, stats, duration
    recon_findings     one row per inconsistency: type, severity, key, columns, values
    recon_corrections  the audit: every correction with its before and after image
    review_queue       findings waiting for a person (extra rows): status, action, note
    recon_jobs         history of the scheduled jobs inside `cdc-recon run`

Created by `cdc-recon init` and, when absent, by the first reconcile run (idempotent).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from cdc_recon.pg.sql import quote_ident
from cdc_recon.reconcile.model import CheckResult, Finding

RECONCILE_TABLES = (
    "recon_runs",
    "recon_results",
    "recon_findings",
    "recon_corrections",
    "review_queue",
    "recon_jobs",
)


def reconcile_ddl(schema: str) -> list[str]:
    s = quote_ident(schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.recon_runs (
            id bigserial PRIMARY KEY, checks text NOT NULL, mode text NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz,
            status text NOT NULL DEFAULT 'running', findings bigint NOT NULL DEFAULT 0,
            detail jsonb)""",
        f"""CREATE TABLE IF NOT EXISTS {s}.recon_results (
            id bigserial PRIMARY KEY, run_id bigint NOT NULL REFERENCES {s}.recon_runs,
            table_name text NOT NULL, check_name text NOT NULL, status text NOT NULL,
            findings bigint NOT NULL, stats jsonb, seconds double precision, error text,
            started_at timestamptz NOT NULL)""",
        f"""CREATE INDEX IF NOT EXISTS recon_results_table
            ON {s}.recon_results (table_name, check_name, started_at)""",
        f"""CREATE TABLE IF NOT EXISTS {s}.recon_findings (
            id bigserial PRIMARY KEY, run_id bigint NOT NULL REFERENCES {s}.recon_runs,
            table_name text NOT NULL, check_name text NOT NULL, type text NOT NULL,
            severity text NOT NULL, key jsonb, columns text[] NOT NULL DEFAULT '{{}}',
            detail jsonb, target_hash text, created_at timestamptz NOT NULL DEFAULT now())""",
        f"CREATE INDEX IF NOT EXISTS recon_findings_run ON {s}.recon_findings (run_id)",
        f"""CREATE TABLE IF NOT EXISTS {s}.recon_corrections (
            id bigserial PRIMARY KEY, finding_id bigint REFERENCES {s}.recon_findings,
            table_name text NOT NULL, key jsonb NOT NULL, correction text NOT NULL,
            status text NOT NULL, before jsonb, after jsonb, note text,
            created_at timestamptz NOT NULL DEFAULT now())""",
        # The retention deletes findings and runs: these make its foreign-key checks
        # (and its "still referenced?" conditions) index lookups, not scans.
        f"CREATE INDEX IF NOT EXISTS recon_corrections_finding "
        f"ON {s}.recon_corrections (finding_id)",
        f"CREATE INDEX IF NOT EXISTS recon_results_run ON {s}.recon_results (run_id)",
        f"""CREATE TABLE IF NOT EXISTS {s}.review_queue (
            id bigserial PRIMARY KEY, finding_id bigint REFERENCES {s}.recon_findings,
            table_name text NOT NULL, key jsonb NOT NULL, type text NOT NULL,
            severity text NOT NULL, status text NOT NULL DEFAULT 'open', action text,
            note text, target_image jsonb, created_at timestamptz NOT NULL DEFAULT now(),
            resolved_at timestamptz, UNIQUE (finding_id))""",
        f"""CREATE TABLE IF NOT EXISTS {s}.recon_jobs (
            id bigserial PRIMARY KEY, job_type text NOT NULL, run_id bigint,
            started_at timestamptz NOT NULL, finished_at timestamptz, status text NOT NULL,
            detail text)""",
    ]


def ensure_reconcile_tables(engine: sa.Engine, schema: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('cdc_recon.init'))")
        for statement in reconcile_ddl(schema):
            conn.exec_driver_sql(statement)


def start_run(engine: sa.Engine, schema: str, checks: str, mode: str) -> tuple[int, dt.datetime]:
    sql = (
        f"INSERT INTO {quote_ident(schema)}.recon_runs (checks, mode) "
        "VALUES (%(checks)s, %(mode)s) RETURNING id, started_at"
    )
    with engine.begin() as conn:
        run_id, started = conn.exec_driver_sql(sql, {"checks": checks, "mode": mode}).one()
    return int(run_id), started


def finish_run(engine: sa.Engine, schema: str, run_id: int, status: str, findings: int) -> None:
    sql = (
        f"UPDATE {quote_ident(schema)}.recon_runs SET finished_at = now(), "
        "status = %(status)s, findings = %(findings)s WHERE id = %(id)s"
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(sql, {"status": status, "findings": findings, "id": run_id})


def _finding_row(run_id: int, finding: Finding) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "table_name": finding.table,
        "check_name": finding.check,
        "type": finding.type,
        "severity": finding.severity,
        "key": finding.key,
        "columns": list(finding.columns),
        "detail": json.dumps(finding.detail, default=str),
        "target_hash": finding.target_hash,
    }


def record_result(
    engine: sa.Engine, schema: str, run_id: int, result: CheckResult, started: dt.datetime
) -> list[int]:
    """Stores one check's result and findings; returns the findings' ids in order."""
    s = quote_ident(schema)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {s}.recon_results (run_id, table_name, check_name, status, "
            "findings, stats, seconds, error, started_at) VALUES (%(run)s, %(table)s, "
            "%(check)s, %(status)s, %(n)s, %(stats)s, %(seconds)s, %(error)s, %(started)s)",
            {
                "run": run_id,
                "table": result.table,
                "check": result.check,
                "status": result.status,
                "n": len(result.findings),
                "stats": json.dumps(result.stats, default=str),
                "seconds": result.seconds,
                "error": result.error,
                "started": started,
            },
        )
        if not result.findings:
            return []
        rows = json.dumps([_finding_row(run_id, f) for f in result.findings], default=str)
        inserted = conn.exec_driver_sql(
            f"INSERT INTO {s}.recon_findings (run_id, table_name, check_name, type, "
            "severity, key, columns, detail, target_hash) SELECT r.run_id, r.table_name, "
            "r.check_name, r.type, r.severity, r.key::jsonb, r.columns, r.detail::jsonb, "
            "r.target_hash FROM ROWS FROM (jsonb_to_recordset(%(rows)s::jsonb) AS ("
            "run_id bigint, table_name text, check_name text, type text, severity text, "
            "key text, columns text[], detail text, target_hash text)) WITH ORDINALITY "
            "AS r(run_id, table_name, check_name, type, severity, key, columns, detail, "
            "target_hash, n) ORDER BY r.n RETURNING id",
            {"rows": rows},
        )
        return sorted(int(i) for i in inserted.scalars())


def last_success(engine: sa.Engine, schema: str, table: str, check: str) -> dt.datetime | None:
    """Start of the newest run of `check` on `table` that did not fail with an error."""
    sql = (
        f"SELECT max(started_at) FROM {quote_ident(schema)}.recon_results "
        "WHERE table_name = %(table)s AND check_name = %(check)s AND status <> 'ERROR'"
    )
    with engine.connect() as conn:
        found = conn.exec_driver_sql(sql, {"table": table, "check": check}).scalar()
    return found if isinstance(found, dt.datetime) else None


def run_findings(
    engine: sa.Engine, schema: str, run_id: int, types: Sequence[str]
) -> list[dict[str, Any]]:
    """The row findings of a run (for corrections), oldest first."""
    sql = (
        f"SELECT id, table_name, type, key::text AS key, columns, target_hash "
        f"FROM {quote_ident(schema)}.recon_findings WHERE run_id = %(run)s "
        "AND type = ANY(%(types)s) AND check_name = 'checksums' ORDER BY id"
    )
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(sql, {"run": run_id, "types": list(types)}).mappings()
        return [dict(row) for row in rows]


def record_job(
    engine: sa.Engine,
    schema: str,
    job: str,
    started: dt.datetime,
    status: str,
    run_id: int | None,
    detail: str,
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {quote_ident(schema)}.recon_jobs (job_type, run_id, started_at, "
            "finished_at, status, detail) VALUES (%(job)s, %(run)s, %(started)s, now(), "
            "%(status)s, %(detail)s)",
            {"job": job, "run": run_id, "started": started, "status": status, "detail": detail},
        )


def last_jobs(engine: sa.Engine, schema: str) -> dict[str, dt.datetime]:
    """When each scheduled job type last started (any outcome)."""
    sql = (
        f"SELECT job_type, max(started_at) FROM {quote_ident(schema)}.recon_jobs GROUP BY job_type"
    )
    with engine.connect() as conn:
        return {job: started for job, started in conn.exec_driver_sql(sql).all()}


def try_job_lock(conn: sa.Connection, job: str) -> bool:
    """A session lock so that one instance runs a scheduled job at a time."""
    sql = "SELECT pg_try_advisory_lock(hashtext('cdc_recon.reconcile.' || %(job)s))"
    return bool(conn.exec_driver_sql(sql, {"job": job}).scalar())


def release_job_lock(conn: sa.Connection, job: str) -> None:
    sql = "SELECT pg_advisory_unlock(hashtext('cdc_recon.reconcile.' || %(job)s))"
    conn.exec_driver_sql(sql, {"job": job})
