"""`--check anomalies` against a real ledger: a purge in the last hour is found, a steady
table is not, and the finding is persisted like any other."""

from __future__ import annotations

import datetime as dt

import pytest

from cdc_recon.apply.ledger import cover
from cdc_recon.config import load_settings
from cdc_recon.control_schema import init_control_schema
from cdc_recon.reconcile.runner import run_reconcile
from tests.conftest import Database

pytestmark = pytest.mark.integration

# Per table and hour h of the last 48 (0 = the last hour), 80-119 changes spread inside
# the hour, mostly updates, applied 0.3 s after the source committed them.
HISTORY = """
INSERT INTO {s}.ledger (change_id, source_table, target_table, key_text, op, position, tx,
                        source_ts_ms, source_ts, outcome, applied_at)
SELECT t || ':' || h || ':' || i, t, t, '["' || (h * 1000 + i) || '"]',
       CASE WHEN mod(i, 10) = 0 THEN 'c' WHEN mod(i, 25) = 7 THEN 'd' ELSE 'u' END,
       ARRAY[h, i]::bigint[], (h * 1000 + i)::text,
       (extract(epoch FROM ts) * 1000)::bigint, ts, 'applied', ts + interval '0.3 s'
FROM unnest(%(tables)s::text[]) t, generate_series(0, 47) h,
     LATERAL generate_series(1, 80 + mod(h * 37, 40)) i,
     LATERAL (SELECT now() - h * interval '1 hour'
                     - (60 + mod(i * 29, 3000)) * interval '1 s') x(ts)
"""
# The anomaly: 2,500 deletes of distinct keys in one transaction, 10-40 minutes ago.
PURGE = """
INSERT INTO {s}.ledger (change_id, source_table, target_table, key_text, op, position, tx,
                        source_ts_ms, source_ts, outcome, applied_at)
SELECT 'purge:' || i, 'public.orders', 'public.orders', '["' || (900000 + i) || '"]', 'd',
       ARRAY[99, i]::bigint[], 'purge', (extract(epoch FROM ts) * 1000)::bigint, ts, 'applied',
       ts + interval '0.3 s'
FROM generate_series(1, 2500) i,
     LATERAL (SELECT now() - (600 + mod(i, 1800)) * interval '1 s') x(ts)
"""


def test_without_a_ledger_the_check_passes_and_says_why(
    source_db: Database, target_db: Database
) -> None:
    settings = load_settings(
        source_url=source_db.url, target_url=target_db.url, control_schema=target_db.schema
    )
    report = run_reconcile(settings, checks=["anomalies"])
    assert [(r.table, r.status) for r in report.results] == [("ledger", "PASS")]
    assert "no ledger" in report.results[0].stats["skipped"]


def test_a_purge_in_the_last_hour_is_an_anomaly_and_steady_traffic_is_not(
    source_db: Database, target_db: Database
) -> None:
    init_control_schema(target_db.engine, target_db.schema)
    now = dt.datetime.now(dt.UTC)  # the ledger's partitions for the rows written below
    cover(target_db.engine, target_db.schema, now - dt.timedelta(hours=50), now)
    schema = f'"{target_db.schema}"'
    with target_db.engine.begin() as conn:
        conn.exec_driver_sql(
            HISTORY.format(s=schema), {"tables": ["public.orders", "public.customers"]}
        )
        conn.exec_driver_sql(PURGE.format(s=schema))
    settings = load_settings(
        source_url=source_db.url,
        target_url=target_db.url,
        control_schema=target_db.schema,
        reconcile={"anomalies": {"lookback": 48 * 3600, "bucket": 3600, "recent": 3600}},
    )
    report = run_reconcile(settings, checks=["anomalies"])

    by_table = {r.table: r for r in report.results}
    assert list(by_table) == ["public.customers", "public.orders"]
    assert by_table["public.customers"].status == "PASS"
    assert by_table["public.customers"].stats["history_buckets"] == 47
    orders = by_table["public.orders"]
    assert orders.status == "FAIL" and len(orders.findings) == 1
    moved = {d["feature"]: d for d in orders.findings[0].detail["deviations"]}
    assert "delete share" in moved and moved["delete share"]["value"] > 0.9
    assert report.status == "FAIL"
    with target_db.engine.connect() as conn:
        stored = conn.exec_driver_sql(
            f"SELECT table_name, type, severity FROM {schema}.recon_findings "
            "WHERE run_id = %(run)s AND check_name = 'anomalies'",
            {"run": report.run_id},
        ).all()
    assert [tuple(row) for row in stored] == [("public.orders", "anomaly", "medium")]

    only = run_reconcile(settings, checks=["anomalies"], tables=["public.customers"])
    assert [(r.table, r.status) for r in only.results] == [("public.customers", "PASS")]
