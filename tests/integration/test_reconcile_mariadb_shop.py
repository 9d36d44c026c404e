"""The MySQL-typed shop workload reconciled from MariaDB against its PostgreSQL target.

The workload writes the five tables in MariaDB (BIGINT UNSIGNED, TINYINT(1), BIT(1),
DATETIME(6), TIMESTAMP(6), DECIMAL, JSON, ENUM, SET, BLOB, zero-able DATE, CHAR(36));
the test copies every row to the target tables of `workload/mariadb.py`'s COLUMNS as
the connector would deliver them (DATETIME as UTC, zero date as NULL), then reconciles:
no difference in any check, and planted ones found exactly.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cdc_recon.config import load_settings
from cdc_recon.mariadb.connection import connect, parse_url
from cdc_recon.mariadb.sql import quote_ident
from cdc_recon.pg.sql import quote_ident as pg_ident
from cdc_recon.reconcile.runner import run_reconcile
from cdc_recon.workload.mariadb import (
    COLUMNS,
    create_mariadb_tables,
    create_target_tables,
    mariadb_mappings,
    run_mariadb_workload,
)
from cdc_recon.workload.runner import WorkloadConfig
from tests.conftest import Database
from tests.integration.xengine import MariaDb, mariadb_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def delivered(value: Any, target_type: str) -> Any:
    """A value read from MariaDB as the target column receives it."""
    if value is None:
        return None
    if target_type.startswith("boolean"):
        return value not in (0, b"\x00")
    if target_type.startswith("timestamptz"):
        return value.replace(tzinfo=dt.UTC)
    if target_type.startswith("date") and not isinstance(value, dt.date):
        return None  # a zero date
    return value


def copy_table(source: MariaDb, target: Database, table: str) -> int:
    columns = COLUMNS[table]
    names = ", ".join(quote_ident(c) for c, _, _ in columns)
    with connect(source.server) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {names} FROM {quote_ident(source.database)}.{quote_ident(table)}")
        rows = [
            tuple(delivered(v, kind) for v, (_, _, kind) in zip(row, columns, strict=True))
            for row in cur.fetchall()
        ]
    placeholders = ", ".join(["%s"] * len(columns))
    listed = ", ".join(pg_ident(c) for c, _, _ in columns)
    with target.engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {target.table(table)} ({listed}) VALUES ({placeholders})", rows
        )
    return len(rows)


def test_the_shop_from_mariadb_reconciles_clean_and_planted_changes_are_exact(
    mariadb_db: MariaDb,  # noqa: F811
    target_db: Database,
) -> None:
    url = parse_url(mariadb_db.url)
    create_mariadb_tables(url)
    create_target_tables(target_db.engine, target_db.schema)
    run_mariadb_workload(url, WorkloadConfig(rate=0, duration=None, count=600, seed=7))
    copied = {table: copy_table(mariadb_db, target_db, table) for table in COLUMNS}
    assert all(copied.values()), copied
    tables = [
        {k: v for k, v in m.items() if k in ("source", "target", "key")}
        for m in mariadb_mappings(mariadb_db.database, target_db.schema)
    ]
    settings = load_settings(
        source_url=mariadb_db.url,
        target_url=target_db.url,
        control_schema=target_db.schema,
        reconcile={"tables": tables, "bisection_threshold": 8, "bisection_factor": 4},
    )
    clean = run_reconcile(settings, checks=["schema", "counts", "checksums", "sample"])
    assert [(r.table, r.check, r.status) for r in clean.results if r.status != "PASS"] == []
    customers, transactions = target_db.table("customers"), target_db.table("transactions")
    with target_db.engine.begin() as conn:
        first = conn.exec_driver_sql(f"SELECT min(id) FROM {customers}").scalar_one()
        conn.exec_driver_sql(
            f"UPDATE {customers} SET verified = NOT coalesce(verified, false), "
            f"tags = coalesce(tags, '') || 'x', attributes = '{{\"planted\": 1}}' "
            f"WHERE id = %(id)s",
            {"id": first},
        )
        uid = conn.exec_driver_sql(f"SELECT min(id::text) FROM {transactions}").scalar_one()
        conn.exec_driver_sql(f"DELETE FROM {transactions} WHERE id = %(id)s", {"id": uid})
    found = run_reconcile(settings, checks=["checksums"])
    by_table = {r.table: {(f.type, f.key, f.columns) for f in r.findings} for r in found.results}
    source_db = mariadb_db.database
    assert by_table[f"{source_db}.customers"] == {
        ("mismatch", f'["{first}"]', ("attributes", "verified", "tags"))
    }
    assert by_table[f"{source_db}.transactions"] == {("missing", f'["{uid}"]', ())}
    assert all(
        not v for t, v in by_table.items() if t.split(".")[1] not in ("customers", "transactions")
    )
