"""SQL of the trigger-fed change log in a MariaDB SOURCE (sweeper adapter `mariadb_trigger`).

`cdc-recon source install --table source.customers` against a `mariadb://` source_url
creates, idempotently:

    <changelog_schema>.changes(id, source_table, key_text, op, changed_s)
        a database of its own (default `cdc_recon_source`), outside the connector's
        `database.include.list`, so the log is never streamed and the source database
        holds nothing of ours but the triggers; one row per changed source row, written
        by the trigger in the changing transaction (InnoDB: it commits or rolls back with
        the change); an index on (changed_s, id) makes a window an index range scan
    triggers `cdcr_c_<hash>`, `cdcr_u_<hash>`, `cdcr_d_<hash>` on the table
        AFTER INSERT / UPDATE / DELETE FOR EACH ROW (SQL SECURITY of the definer: the
        writing sessions need no privilege on the log)

The identity an entry carries, and why (the experiment is
tests/integration/test_mariadb_sweep.py::test_identity_experiment):

- `source_table` is `db.table`, as the Debezium MariaDB connector names it;
- `key_text` is `CONCAT('[', JSON_QUOTE(CAST(k1 AS CHAR)), ',', ..., ']')`: the compact
  JSON array of strings that `cdc_recon.events.key_text` makes of the decoded message
  key (MariaDB's JSON_ARRAY would add spaces). It agrees for integer (also BIGINT
  UNSIGNED), DECIMAL and text keys; a key of a temporal or TINYINT(1) column does not
  print alike on both sides and is refused at install;
- `op` is Debezium's: `c`, `u`, `d`; an UPDATE that changes the key is logged as `d` of
  the old key and `c` of the new, as the connector emits it; an UPDATE that leaves every
  column byte-identical is not logged, since the server writes no row event for it (and
  Debezium sends nothing) although the trigger fires;
- `changed_s` is `UNIX_TIMESTAMP()`, the start second of the triggering statement (also
  inside a multi-statement transaction, and under `SET timestamp`), which is exactly the
  binlog event header time the connector reports as `source.ts_ms` (whole seconds).

A trigger cannot see its transaction's GTID or binlog position, so an entry cannot name
its change id (`table:key:gtid`). The sweeper matches by COUNT instead: N entries of
(table, key, op, second) against the M ledger rows with the same source_table, key_text,
op and floor(source_ts_ms / 1000). M >= N: all applied. That is exact per change while a
key changes at most once per second and op; otherwise it is proven per key, op and
second only: one of two lost changes in a second shows as a shortfall of one, but which
one (its GTID) is known only when the message is found in Kafka.

Identifiers come from the configuration and the catalog and are always quoted (backticks);
values travel as parameters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cdc_recon.mariadb.sql import quote_ident, quote_table, split_table

CHANGES_TABLE = "changes"
TRIGGER_PREFIX = "cdcr_"
TRIGGER_OPS = {"c": "INSERT", "u": "UPDATE", "d": "DELETE"}
# Key column types whose CAST(... AS CHAR) is the text Debezium's decoded value prints.
KEY_TYPES = frozenset(
    {"tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "char", "varchar"}
)


def changes_table(db: str) -> str:
    return f"{quote_ident(db)}.{quote_ident(CHANGES_TABLE)}"


def changelog_ddl(db: str) -> list[str]:
    """The change-log database and table; every statement is idempotent."""
    return [
        f"CREATE DATABASE IF NOT EXISTS {quote_ident(db)} CHARACTER SET utf8mb4",
        f"""CREATE TABLE IF NOT EXISTS {changes_table(db)} (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            source_table VARCHAR(256) NOT NULL,
            key_text VARCHAR(3072) NOT NULL,
            op CHAR(1) NOT NULL,
            changed_s BIGINT NOT NULL,
            KEY changes_window (changed_s, id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ]


def trigger_name(table: str, op: str) -> str:
    """`cdcr_<op>_<hash of db.table>`: short (64 characters at most) and unique per table."""
    digest = hashlib.sha1(table.encode()).hexdigest()[:16]
    return f"{TRIGGER_PREFIX}{op}_{digest}"


def columns_query() -> str:
    """Columns of `%(db)s`.`%(table)s` in order: name, data type, key position (or NULL)."""
    return (
        "SELECT c.COLUMN_NAME, c.DATA_TYPE, k.ORDINAL_POSITION FROM information_schema.COLUMNS c "
        "LEFT JOIN information_schema.KEY_COLUMN_USAGE k ON k.TABLE_SCHEMA = c.TABLE_SCHEMA "
        "AND k.TABLE_NAME = c.TABLE_NAME AND k.COLUMN_NAME = c.COLUMN_NAME "
        "AND k.CONSTRAINT_NAME = 'PRIMARY' "
        "WHERE c.TABLE_SCHEMA = %(db)s AND c.TABLE_NAME = %(table)s ORDER BY c.ORDINAL_POSITION"
    )


def installed_tables() -> str:
    """`db.table` of every table with a change-log trigger of ours (`%(prefix)s` LIKE)."""
    return (
        "SELECT DISTINCT CONCAT(EVENT_OBJECT_SCHEMA, '.', EVENT_OBJECT_TABLE) "
        "FROM information_schema.TRIGGERS WHERE TRIGGER_NAME LIKE %(prefix)s "
        "AND ACTION_STATEMENT LIKE %(log)s ORDER BY 1"
    )


def key_json(record: str, key: Sequence[str]) -> str:
    """The key_text expression over `NEW`/`OLD`: a compact JSON array of strings."""
    parts = ", ',', ".join(f"JSON_QUOTE(CAST({record}.{quote_ident(c)} AS CHAR))" for c in key)
    return f"CONCAT('[', {parts}, ']')"


def _log_row(db: str, table: str, record: str, key: Sequence[str], op: str) -> str:
    name = table.replace("'", "''").replace("\\", "\\\\")
    return (
        f"INSERT INTO {changes_table(db)} (source_table, key_text, op, changed_s) "
        f"VALUES ('{name}', {key_json(record, key)}, '{op}', UNIX_TIMESTAMP())"
    )


def _same(columns: Sequence[str]) -> str:
    """Every column byte-identical in OLD and NEW (NULL-safe)."""
    return " AND ".join(
        f"BINARY OLD.{quote_ident(c)} <=> BINARY NEW.{quote_ident(c)}" for c in columns
    )


def install_statements(
    db: str, table: str, key: Sequence[str], columns: Sequence[str]
) -> list[str]:
    """The three triggers of `table` (db.table) keyed by `key`; replaced when present."""
    quoted = quote_table(table, "")
    database, _ = split_table(table, "")
    same_key = _same(key)
    update = (
        f"BEGIN IF NOT ({_same(columns)}) THEN "
        f"IF {same_key} THEN {_log_row(db, table, 'NEW', key, 'u')}; "
        f"ELSE {_log_row(db, table, 'OLD', key, 'd')}; "
        f"{_log_row(db, table, 'NEW', key, 'c')}; END IF; END IF; END"
    )
    bodies = {
        "c": _log_row(db, table, "NEW", key, "c"),
        "u": update,
        "d": _log_row(db, table, "OLD", key, "d"),
    }
    statements = []
    for op, body in bodies.items():
        name = f"{quote_ident(database)}.{quote_ident(trigger_name(table, op))}"
        statements.append(f"DROP TRIGGER IF EXISTS {name}")
        statements.append(
            f"CREATE TRIGGER {name} AFTER {TRIGGER_OPS[op]} ON {quoted} FOR EACH ROW {body}"
        )
    return statements


def uninstall_statements(table: str) -> list[str]:
    database, _ = split_table(table, "")
    return [
        f"DROP TRIGGER IF EXISTS {quote_ident(database)}.{quote_ident(trigger_name(table, op))}"
        for op in TRIGGER_OPS
    ]


def drop_log(db: str) -> str:
    return f"DROP TABLE IF EXISTS {changes_table(db)}"


def table_exists() -> str:
    return (
        "SELECT count(*) FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %(db)s AND TABLE_NAME = %(table)s"
    )


def prune(db: str, limit: int) -> str:
    """Delete up to `limit` entries older than `%(cutoff)s` (epoch seconds)."""
    return f"DELETE FROM {changes_table(db)} WHERE changed_s < %(cutoff)s LIMIT {int(limit)}"


def earliest_change(db: str, tables: int) -> str:
    """The oldest entry's second among `tables` names passed as %(t0)s, %(t1)s, ..."""
    names = ", ".join(f"%(t{i})s" for i in range(tables))
    return f"SELECT min(changed_s) FROM {changes_table(db)} WHERE source_table IN ({names})"


def closed_until() -> str:
    """The server's clock minus `%(grace)s` seconds, and no later than the start of the
    oldest other transaction that wrote or waits for a lock: its entries may still
    commit with an earlier second. (Epoch seconds, fractional; PROCESS privilege.)"""
    return (
        "SELECT LEAST(UNIX_TIMESTAMP(NOW(6)) - %(grace)s, COALESCE((SELECT "
        "UNIX_TIMESTAMP(MIN(trx_started)) FROM information_schema.INNODB_TRX "
        "WHERE trx_mysql_thread_id <> CONNECTION_ID() "
        "AND (trx_rows_modified > 0 OR trx_state = 'LOCK WAIT')), UNIX_TIMESTAMP(NOW(6))))"
    )


def window_counts(db: str, tables: int) -> str:
    """Entries per (table, key, op, second) of `[%(from)s, %(to)s)` (whole epoch seconds),
    in key order. Columns match the stage `mariadb_queries.COUNT_COLUMNS`."""
    names = ", ".join(f"%(t{i})s" for i in range(tables))
    return (
        f"SELECT source_table, key_text, op, changed_s, count(*) FROM {changes_table(db)} "
        f"WHERE changed_s >= %(from)s AND changed_s < %(to)s AND source_table IN ({names}) "
        "GROUP BY changed_s, source_table, key_text, op"
    )


def changed_keys(db: str, tables: int) -> str:
    """Distinct keys per table changed in `[%(from)s, %(to)s)` (epoch seconds)."""
    names = ", ".join(f"%(t{i})s" for i in range(tables))
    return (
        f"SELECT DISTINCT source_table, key_text FROM {changes_table(db)} "
        f"WHERE changed_s >= %(from)s AND changed_s < %(to)s AND source_table IN ({names}) "
        "ORDER BY source_table, key_text"
    )


def table_params(tables: Sequence[str]) -> dict[str, str]:
    """`{"t0": first, "t1": second, ...}`: PyMySQL has no array parameters."""
    return {f"t{i}": name for i, name in enumerate(tables)}
