"""SQL of `cdc-recon trace`: one key's rows in each control table, and the indexes that
make every one of those reads an index lookup.

Every read is bounded: by the key (an index on table and key in each table that holds
per-key rows), by the time range (`%(from)s`..`%(to)s`, the ledger's partition key and
the change log's window index), and by a `LIMIT`. The failures table has no key column
(a quarantined message may not decode), so its rows of the table in the range are read,
at most `SCAN_FAILURES` of them, and matched by decoding (`cdc_recon.trace.reader`).

Identifiers come from the configuration and are quoted; values travel as parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from cdc_recon.pg.sql import quote_ident, quote_table

SCAN_FAILURES = 5000  # quarantined messages of the table in the range read for a trace
LEDGER_KEY_INDEX = "ledger_key"


def trace_ddl(schema: str) -> list[str]:
    """The trace's indexes (run by `cdc-recon init` after every table exists).

    ledger_key: one btree entry per ledger row, created on the partitioned ledger so
    that every partition, and each new one, has its own. The price is one more index
    insert per applied change (`bench/trace.py` measures it beside the trace's time);
    without it a trace reads every ledger row of the range.
    """
    s = quote_ident(schema)
    return [
        f"CREATE INDEX IF NOT EXISTS {LEDGER_KEY_INDEX} ON {s}.ledger "
        "(source_table, key_text, source_ts)",
        f"CREATE INDEX IF NOT EXISTS missed_changes_key ON {s}.missed_changes "
        "(source_table, key_text)",
        f"CREATE INDEX IF NOT EXISTS failures_table_time ON {s}.failures "
        "(source_table, created_at)",
        f"CREATE INDEX IF NOT EXISTS recon_findings_key ON {s}.recon_findings (table_name, key)",
        f"CREATE INDEX IF NOT EXISTS recon_corrections_key ON {s}.recon_corrections "
        "(table_name, key)",
    ]


def ledger_rows(schema: str) -> str:
    return (
        "SELECT change_id, op, position, tx, source_ts, topic, kafka_partition, kafka_offset, "
        f"outcome, applied_at FROM {quote_ident(schema)}.ledger "
        "WHERE source_table = %(table)s AND key_text = %(key)s "
        "AND source_ts >= %(from)s AND source_ts < %(to)s "
        "ORDER BY source_ts, position LIMIT %(limit)s"
    )


def key_state(schema: str) -> str:
    return (
        "SELECT position, deleted, incomplete, updated_at "
        f"FROM {quote_ident(schema)}.key_state "
        "WHERE target_table = %(target)s AND key_text = %(key)s"
    )


def missed_rows(schema: str) -> str:
    return (
        "SELECT change_id, tx, position, changed_at, topic, kafka_partition, kafka_offset, "
        "reason, status, attempts, last_error, found_at, replayed_at "
        f"FROM {quote_ident(schema)}.missed_changes "
        "WHERE source_table = %(table)s AND key_text = %(key)s "
        "AND changed_at >= %(from)s AND changed_at < %(to)s "
        "ORDER BY changed_at LIMIT %(limit)s"
    )


def failure_rows(schema: str) -> str:
    """The table's quarantined messages (and those of no known table) created in the
    range, newest first, with their raw bytes."""
    return (
        "SELECT id, topic, kafka_partition, kafka_offset, raw_key, raw_value, reason, detail, "
        "source_table, status, created_at, resolved_at, retried_at, attempts, retry_outcome, "
        "note, dead_letter, dead_letter_detail "
        f"FROM {quote_ident(schema)}.failures "
        "WHERE (source_table = %(table)s OR source_table IS NULL) "
        "AND created_at >= %(from)s AND created_at < %(to)s "
        f"ORDER BY created_at DESC LIMIT {SCAN_FAILURES}"
    )


def findings(schema: str) -> str:
    """Reconciliation keeps a key as a JSON array of typed values (`[17]`), the ledger
    as one of texts (`["17"]`): `%(key_typed)s` is the former (`typed_key`)."""
    return (
        "SELECT f.id, f.run_id, f.check_name, f.type, f.severity, f.columns, f.detail, "
        f"f.created_at FROM {quote_ident(schema)}.recon_findings f "
        "WHERE f.table_name = %(table)s AND f.key IN (%(key)s::jsonb, %(key_typed)s::jsonb) "
        "AND f.created_at >= %(from)s AND f.created_at < %(to)s "
        "ORDER BY f.id LIMIT %(limit)s"
    )


def corrections(schema: str) -> str:
    return (
        "SELECT c.id, c.finding_id, c.correction, c.status, c.before, c.after, c.note, "
        f"c.created_at FROM {quote_ident(schema)}.recon_corrections c "
        "WHERE c.table_name = %(table)s AND c.key IN (%(key)s::jsonb, %(key_typed)s::jsonb) "
        "AND c.created_at >= %(from)s AND c.created_at < %(to)s "
        "ORDER BY c.id LIMIT %(limit)s"
    )


def changelog_rows(changes_table: str) -> str:
    """The key's entries in the trigger change log of the source (`changes_table`
    quoted): the window index bounds the scan to the range. The change id is computed
    as the sweeper does: the xid masked to the 32 bits Debezium reports."""
    return (
        "SELECT source_table || ':' || key_text || ':' || (txid & 4294967295)::text "
        "AS change_id, op, (txid & 4294967295)::text AS tx, lsn::text AS lsn, changed_at "
        f"FROM {changes_table} WHERE changed_at >= %(from)s AND changed_at < %(to)s "
        "AND source_table = %(table)s AND key_text = %(key)s "
        "ORDER BY changed_at, id LIMIT %(limit)s"
    )


def row_by_key(table: str, key: Sequence[str]) -> str:
    """The current row of `table` (schema.table) whose `key` columns equal the key
    object `%(keys)s` holds (a JSON array of one {column: text} object), as jsonb.
    The key is cast to the columns' types (`jsonb_populate_recordset`), so the table's
    own key index is used."""
    quoted = quote_table(table)
    match = " AND ".join(f"t.{quote_ident(c)} = k.{quote_ident(c)}" for c in key)
    return (
        f"SELECT to_jsonb(t) FROM jsonb_populate_recordset(NULL::{quoted}, %(keys)s::jsonb) "
        f"AS k JOIN {quoted} AS t ON {match} LIMIT 1"
    )


def relation_exists() -> str:
    return "SELECT to_regclass(%(name)s) IS NOT NULL"
