"""SQL of the trigger-fed change log in the SOURCE database (sweeper adapter `pg_trigger`).

`cdc-recon source install --table public.customers` creates, idempotently:

    <changelog_schema>.changes(id, source_table, key_text, op, txid, lsn, changed_at)
        one row per changed source row, written by the trigger in the changing
        transaction; a btree on (changed_at, id) makes a window scan (and the sweeper's
        keyset batches) an index range scan
    <changelog_schema>.<capture function>() and a trigger `cdcr_changelog` on the table
        AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW

The trigger computes the change's identity exactly like `cdc_recon.events` does on the
Kafka side: `source_table` is `schema.table` (Debezium's naming), `key_text` is
`array_to_json(ARRAY[k1::text, ...])::text` over the key columns in key order (the
mapping's `key` when the table is mapped, else the primary key from the catalog),
`txid` is `txid_current()` (the sweeper masks it to the 32-bit xid Debezium reports) and
`lsn` is `pg_current_wal_insert_lsn()`, which orders the changes of one key like
Debezium's LSN does. An update that changes the key is logged as a delete of the old key
and an insert of the new one, as Debezium emits it.

Identifiers come from the configuration and the catalog and are always quoted; values
travel as parameters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cdc_recon.pg.sql import quote_ident, quote_table

TRIGGER_NAME = "cdcr_changelog"
CHANGES_TABLE = "changes"
CAPTURE_PREFIX = "capture_"


def changes_table(schema: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(CHANGES_TABLE)}"


def changelog_ddl(schema: str) -> list[str]:
    """The change-log schema and table; every statement is idempotent."""
    table = changes_table(schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}",
        f"""CREATE TABLE IF NOT EXISTS {table} (
            id bigserial NOT NULL,
            source_table text NOT NULL,
            key_text text NOT NULL,
            op char(1) NOT NULL,
            txid bigint NOT NULL,
            lsn pg_lsn NOT NULL,
            changed_at timestamptz NOT NULL DEFAULT clock_timestamp())""",
        f"CREATE INDEX IF NOT EXISTS changes_window ON {table} (changed_at, id)",
    ]


def install_lock() -> str:
    """Two installs at once must not race on CREATE ... IF NOT EXISTS."""
    return "SELECT pg_advisory_xact_lock(hashtext('cdc_recon.source_install'))"


def primary_key_columns() -> str:
    """Key columns of the table named by `%(table)s` (a quoted name), in key order."""
    return (
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %(table)s::regclass AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)"
    )


def table_exists() -> str:
    return "SELECT to_regclass(%(table)s) IS NOT NULL"


def installed_tables() -> str:
    """`schema.table` of every table whose change-log trigger writes to the change log in
    `%(schema)s` (several change logs may live in one source database)."""
    return (
        "SELECT n.nspname || '.' || c.relname FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace fn ON fn.oid = p.pronamespace "
        f"WHERE t.tgname = '{TRIGGER_NAME}' AND NOT t.tgisinternal "
        "AND fn.nspname = %(schema)s ORDER BY 1"
    )


def capture_function(schema: str, table: str) -> str:
    """The quoted name of `table`'s capture function (a readable prefix and a hash)."""
    digest = hashlib.sha1(table.encode()).hexdigest()[:10]
    readable = table.replace(".", "_")[:40]
    return f"{quote_ident(schema)}.{quote_ident(f'{CAPTURE_PREFIX}{readable}_{digest}')}"


def _key_json(record: str, key: Sequence[str]) -> str:
    values = ", ".join(f"{record}.{quote_ident(column)}::text" for column in key)
    return f"array_to_json(ARRAY[{values}])::text"


def _log_row(schema: str, record: str, key: Sequence[str], op: str) -> str:
    return (
        f"INSERT INTO {changes_table(schema)} (source_table, key_text, op, txid, lsn) "
        f"VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, {_key_json(record, key)}, "
        f"'{op}', txid_current(), pg_current_wal_insert_lsn());"
    )


def _dollar_quote(body: str) -> str:
    tag = "$cdcr$"
    n = 0
    while tag in body:
        n += 1
        tag = f"$cdcr{n}$"
    return f"{tag}{body}{tag}"


def install_statements(schema: str, table: str, key: Sequence[str]) -> list[str]:
    """Capture function and trigger for `table` (schema.table) keyed by `key`; idempotent."""
    old_key = ", ".join(f"OLD.{quote_ident(c)}" for c in key)
    new_key = ", ".join(f"NEW.{quote_ident(c)}" for c in key)
    body = f"""
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_log_row(schema, "NEW", key, "c")}
    ELSIF TG_OP = 'UPDATE' THEN
        IF ROW({old_key}) IS DISTINCT FROM ROW({new_key}) THEN
            {_log_row(schema, "OLD", key, "d")}
            {_log_row(schema, "NEW", key, "c")}
        ELSE
            {_log_row(schema, "NEW", key, "u")}
        END IF;
    ELSE
        {_log_row(schema, "OLD", key, "d")}
    END IF;
    RETURN NULL;
END
"""
    function = capture_function(schema, table)
    quoted = quote_table(table)
    return [
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
        f"AS {_dollar_quote(body)}",
        f"DROP TRIGGER IF EXISTS {TRIGGER_NAME} ON {quoted}",
        f"CREATE TRIGGER {TRIGGER_NAME} AFTER INSERT OR UPDATE OR DELETE ON {quoted} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
    ]


def uninstall_statements(schema: str, table: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {TRIGGER_NAME} ON {quote_table(table)}",
        f"DROP FUNCTION IF EXISTS {capture_function(schema, table)}()",
    ]


def drop_log(schema: str) -> str:
    return f"DROP TABLE IF EXISTS {changes_table(schema)}"


def prune(schema: str) -> str:
    """Delete the entries older than `%(cutoff)s` (retention, never past the watermark)."""
    return f"DELETE FROM {changes_table(schema)} WHERE changed_at < %(cutoff)s"


def earliest_change(schema: str) -> str:
    return (
        f"SELECT min(changed_at) FROM {changes_table(schema)} WHERE source_table = ANY(%(tables)s)"
    )


def closed_until() -> str:
    """The source's clock minus `%(grace)s` seconds, and no later than the oldest open
    writing transaction's start: a change written by it may still commit with an
    earlier `changed_at` (sessions of other roles may hide their start from us)."""
    return (
        "SELECT least(clock_timestamp() - make_interval(secs => %(grace)s), "
        "(SELECT min(xact_start) FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
        " AND datname = current_database() AND pid <> pg_backend_pid()))"
    )


def window_batch(schema: str, after: bool) -> str:
    """COPY out one keyset batch of the window's entries, in (changed_at, id) order.

    Columns match the sweeper's stage (`sweep_sql.TRIGGER_COLUMNS`): the change id
    (`table:key:xid`, the xid masked to the 32 bits Debezium reports), the table's
    1-based number in `%(tables)s`, the LSN as a number, changed_at and id (last two for
    the keyset). Parameters: from, to, tables, limit; with `after`, last_at and last_id.
    """
    resume = " AND (changed_at, id) > (%(last_at)s::timestamptz, %(last_id)s)" if after else ""
    return (
        "COPY (SELECT source_table || ':' || key_text || ':' || (txid & 4294967295), "
        "array_position(%(tables)s::text[], source_table), "
        "(lsn - '0/0'::pg_lsn)::bigint, changed_at, id "
        f"FROM {changes_table(schema)} "
        "WHERE changed_at >= %(from)s AND changed_at < %(to)s "
        f"AND source_table = ANY(%(tables)s){resume} "
        "ORDER BY changed_at, id LIMIT %(limit)s) TO STDOUT"
    )
