"""SQL of the retention in the TARGET database: what is old enough per control table, the
chunked delete, the lock, and the retention's own table.

    prune_state  one row per pruning task: its last round (when, outcome, rows, cutoff)
                 and the last round that removed rows; bounded by the number of tasks

A table is walked in ranges of `CHUNK_BLOCKS` heap blocks (a TID range scan), so one
round reads each block about once however large the backlog: a `LIMIT` loop from the
start of the table would rescan the rows it just deleted (dead until vacuum) on every
turn. In each range, one short transaction counts the rows old enough and deletes at
most `batch_size` of them, locking them first with `FOR UPDATE SKIP LOCKED`: a row held
by another transaction (the applier advancing that key, an operator resolving that
failure) is left for the next round instead of waited for. The statements repeat the
condition on the row they delete, so a row changed since it was chosen stays.

The conditions keep what is still work to do or still read: open failures, failures
whose dead letter is pending, pending or failed missed changes, open review rows, the
findings a kept correction or review row points at, the runs their results or findings
belong to, the newest successful result per table and check (incremental checksums
start from it) and the newest job of each type (the scheduler reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

from cdc_recon.pg.sql import quote_ident

RETENTION_TABLES = ("prune_state",)
CHUNK_BLOCKS = 1024  # heap blocks (8 MiB) one delete transaction scans

LOCK_KEY = "hashtext('cdc_recon.retention'), hashtext(%(schema)s)"


@dataclass(frozen=True)
class Rule:
    """Which rows of one control table are old enough: `condition` over alias `t`, with
    `%(cutoff)s` and the control schema as `{s}`."""

    table: str
    condition: str

    def where(self, schema: str) -> str:
        return self.condition.format(s=quote_ident(schema))


KEY_STATE = Rule("key_state", "t.deleted AND t.updated_at < %(cutoff)s")
FAILURES = Rule(
    "failures",
    "t.status <> 'open' AND t.dead_letter <> 'pending' "
    "AND coalesce(t.resolved_at, t.created_at) < %(cutoff)s",
)
MISSED_CHANGES = Rule(
    "missed_changes",
    "t.status = 'replayed' AND coalesce(t.replayed_at, t.found_at) < %(cutoff)s",
)
SWEEP_RUNS = Rule("sweep_runs", "coalesce(t.finished_at, t.started_at) < %(cutoff)s")
RECON_CORRECTIONS = Rule("recon_corrections", "t.created_at < %(cutoff)s")
REVIEW_QUEUE = Rule(
    "review_queue",
    "t.status <> 'open' AND coalesce(t.resolved_at, t.created_at) < %(cutoff)s",
)
RECON_FINDINGS = Rule(
    "recon_findings",
    "t.created_at < %(cutoff)s "
    "AND NOT EXISTS (SELECT 1 FROM {s}.recon_corrections c WHERE c.finding_id = t.id) "
    "AND NOT EXISTS (SELECT 1 FROM {s}.review_queue q WHERE q.finding_id = t.id)",
)
RECON_RESULTS = Rule(
    "recon_results",
    "t.started_at < %(cutoff)s AND (t.status = 'ERROR' OR EXISTS (SELECT 1 FROM "
    "{s}.recon_results n WHERE n.table_name = t.table_name AND n.check_name = t.check_name "
    "AND n.status <> 'ERROR' AND n.started_at > t.started_at))",
)
RECON_RUNS = Rule(
    "recon_runs",
    "coalesce(t.finished_at, t.started_at) < %(cutoff)s "
    "AND NOT EXISTS (SELECT 1 FROM {s}.recon_results r WHERE r.run_id = t.id) "
    "AND NOT EXISTS (SELECT 1 FROM {s}.recon_findings f WHERE f.run_id = t.id)",
)
RECON_JOBS = Rule(
    "recon_jobs",
    "t.started_at < %(cutoff)s AND EXISTS (SELECT 1 FROM {s}.recon_jobs n "
    "WHERE n.job_type = t.job_type AND n.started_at > t.started_at)",
)


def retention_ddl(schema: str) -> list[str]:
    s = quote_ident(schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.prune_state (
            task text PRIMARY KEY,
            last_run_at timestamptz NOT NULL,
            status text NOT NULL,
            rows bigint NOT NULL,
            cutoff timestamptz,
            detail text,
            last_pruned_at timestamptz,
            last_pruned_rows bigint,
            total_rows bigint NOT NULL DEFAULT 0)""",
    ]


def try_lock() -> str:
    """A session lock per control schema, held for a whole round."""
    return f"SELECT pg_try_advisory_lock({LOCK_KEY})"


def unlock() -> str:
    return f"SELECT pg_advisory_unlock({LOCK_KEY})"


def table_exists() -> str:
    return "SELECT to_regclass(%(table)s) IS NOT NULL"


def table_blocks() -> str:
    """Heap blocks of the table now; rows added later are newer than any cutoff."""
    return "SELECT pg_relation_size(%(table)s::regclass) / current_setting('block_size')::int"


def set_lock_timeout(seconds: float) -> str:
    return f"SET LOCAL lock_timeout = {max(int(seconds * 1000), 1):d}"


def _in_range(last: bool) -> str:
    upper = "" if last else " AND t.ctid < %(hi)s::tid"
    return f"t.ctid >= %(lo)s::tid{upper}"


def count_old(rule: Rule, schema: str, *, last: bool) -> str:
    """Rows of one range (`lo`, `hi`; the last range is open) old enough to go."""
    table = f"{quote_ident(schema)}.{quote_ident(rule.table)}"
    return f"SELECT count(*) FROM {table} AS t WHERE {_in_range(last)} AND {rule.where(schema)}"


def delete_old(rule: Rule, schema: str, *, last: bool) -> str:
    """Delete up to `limit` old rows of one range that no other transaction holds."""
    table = f"{quote_ident(schema)}.{quote_ident(rule.table)}"
    where = rule.where(schema)
    return (
        f"DELETE FROM {table} AS t WHERE t.ctid = ANY(ARRAY("
        f"SELECT t.ctid FROM {table} AS t WHERE {_in_range(last)} AND {where} "
        f"LIMIT %(limit)s FOR UPDATE OF t SKIP LOCKED)) AND {where}"
    )


def count_all_old(rule: Rule, schema: str) -> str:
    """Every row old enough (a dry run)."""
    table = f"{quote_ident(schema)}.{quote_ident(rule.table)}"
    return f"SELECT count(*) FROM {table} AS t WHERE {rule.where(schema)}"


def record_state(schema: str) -> str:
    """Upsert one task's outcome of a round."""
    return (
        f"INSERT INTO {quote_ident(schema)}.prune_state AS p (task, last_run_at, status, "
        "rows, cutoff, detail, last_pruned_at, last_pruned_rows, total_rows) VALUES "
        "(%(task)s, %(at)s, %(status)s, %(rows)s, %(cutoff)s, %(detail)s, "
        "CASE WHEN %(rows)s > 0 THEN %(at)s END, CASE WHEN %(rows)s > 0 THEN %(rows)s END, "
        "%(rows)s) ON CONFLICT (task) DO UPDATE SET last_run_at = EXCLUDED.last_run_at, "
        "status = EXCLUDED.status, rows = EXCLUDED.rows, cutoff = EXCLUDED.cutoff, "
        "detail = EXCLUDED.detail, "
        "last_pruned_at = coalesce(EXCLUDED.last_pruned_at, p.last_pruned_at), "
        "last_pruned_rows = coalesce(EXCLUDED.last_pruned_rows, p.last_pruned_rows), "
        "total_rows = p.total_rows + EXCLUDED.rows"
    )


def read_state(schema: str) -> str:
    return (
        "SELECT task, last_run_at, status, rows, cutoff, detail, last_pruned_at, "
        f"last_pruned_rows, total_rows FROM {quote_ident(schema)}.prune_state ORDER BY task"
    )
