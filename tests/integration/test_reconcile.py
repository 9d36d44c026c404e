"""Reconciliation against real PostgreSQL: source and target schemas of their own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cdc_recon.cli.app import main
from cdc_recon.config import Settings, load_settings
from cdc_recon.reconcile.corrections import correct_run
from cdc_recon.reconcile.runner import ReconcileReport, run_reconcile
from tests.conftest import Database

pytestmark = pytest.mark.integration

ROWS = 20_000
DDL = """CREATE TABLE {t} (id bigint PRIMARY KEY, name text, amount numeric(12,2),
    ts timestamptz, flag boolean, country text, version int NOT NULL DEFAULT 0)"""
FILL = """INSERT INTO {t} SELECT g, 'name ' || g, (g % 1000) / 10.0,
    timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute', g % 3 = 0,
    (ARRAY['de', 'fr', 'nl'])[1 + g % 3], 0 FROM generate_series(1, {n}) g"""


def run(db: Database, *statements: str) -> None:
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement.format(t=db.table("items"), n=ROWS)))


def settings_for(
    source: Database, target: Database, reconcile: dict[str, Any] | None = None, **table: Any
) -> Settings:
    entry = {"source": f"{source.schema}.items", "target": f"{target.schema}.items", **table}
    small = {"segment_rows": 4000, "bisection_factor": 8, "bisection_threshold": 40}
    return load_settings(
        source_url=source.url,
        target_url=target.url,
        control_schema=target.schema,
        reconcile={**small, "tables": [entry], **(reconcile or {})},
    )


@pytest.fixture
def pair(source_db: Database, target_db: Database) -> tuple[Database, Database]:
    for db in (source_db, target_db):
        run(db, DDL, FILL)
    return source_db, target_db


PLANTED = (
    "UPDATE {t} SET amount = amount + 1 WHERE id IN (17, 9000)",
    "UPDATE {t} SET name = NULL WHERE id = 12345",
    "UPDATE {t} SET name = '' WHERE id = 12346",
    "DELETE FROM {t} WHERE id IN (1, 4444, 20000)",
    "INSERT INTO {t} (id, name) VALUES (25000, 'extra'), (10000000, 'far')",
)


def keys(report: ReconcileReport, check: str = "checksums") -> dict[str, tuple[str, ...]]:
    result = next(r for r in report.results if r.check == check)
    return {f"{f.type} {f.key}": f.columns for f in result.findings}


EXPECTED = {
    "missing [1]": (),
    "missing [4444]": (),
    "missing [20000]": (),
    "extra [25000]": (),
    "extra [10000000]": (),
    "mismatch [17]": ("amount",),
    "mismatch [9000]": ("amount",),
    "mismatch [12345]": ("name",),
    "mismatch [12346]": ("name",),
}


@pytest.mark.parametrize("algorithm", ["fast64", "md5"])
def test_bisection_finds_the_exact_keys(pair: tuple[Database, Database], algorithm: str) -> None:
    source, target = pair
    run(target, *PLANTED)
    # Equal after normalisation: 1.5 vs 1.5000, timestamptz vs UTC timestamp, int vs
    # bigint, and int vs numeric (kinds differ: hashed as normalised text).
    run(
        target,
        "ALTER TABLE {t} ALTER amount TYPE numeric(14,4)",
        "ALTER TABLE {t} ALTER ts TYPE timestamp USING ts AT TIME ZONE 'UTC'",
        "ALTER TABLE {t} ALTER version TYPE numeric(6,2)",
    )
    run(source, "ALTER TABLE {t} ALTER version TYPE bigint")
    settings = settings_for(source, target, reconcile={"hash": algorithm})
    report = run_reconcile(settings, checks=["checksums"])
    assert keys(report) == EXPECTED
    stats = report.results[0].stats
    assert stats["fetched_rows"] < ROWS / 4 and stats["depth"] >= 1
    assert report.status == "FAIL"


def test_generic_keys_use_quantiles(pair: tuple[Database, Database]) -> None:
    source, target = pair
    for db in (source, target):
        run(
            db,
            "ALTER TABLE {t} DROP CONSTRAINT items_pkey",
            "ALTER TABLE {t} ADD PRIMARY KEY (country, id)",
        )
    run(target, "DELETE FROM {t} WHERE id = 77", "UPDATE {t} SET flag = NOT flag WHERE id = 78")
    report = run_reconcile(settings_for(source, target, exclude=["version"]), checks=["checksums"])
    assert keys(report) == {'missing ["nl", 77]': (), 'mismatch ["de", 78]': ("flag",)}


def test_counts_schema_integrity_temporal_rules_and_sample(pair: tuple[Database, Database]) -> None:
    source, target = pair
    run(
        target,
        "DELETE FROM {t} WHERE id = 3",
        "ALTER TABLE {t} ADD COLUMN note text",
        "ALTER TABLE {t} ALTER version DROP NOT NULL",
        "UPDATE {t} SET ts = ts - interval '1 day' WHERE id = 10",
        "UPDATE {t} SET ts = now() + interval '1 day' WHERE id = 11",
    )
    t = target.table("items")
    run(
        target,
        f"CREATE TABLE {target.table('orders')} (id int PRIMARY KEY, item_id bigint)",
        f"INSERT INTO {target.table('orders')} VALUES (1, 5), (2, 3), (3, 999999)",
    )
    rule = "SELECT country, sum(amount) FROM {} GROUP BY 1"
    settings = load_settings(
        source_url=source.url,
        target_url=target.url,
        control_schema=target.schema,
        reconcile={
            "tables": [
                {
                    "source": f"{source.schema}.items",
                    "target": f"{target.schema}.items",
                    "group_by": ["country"],
                    "date_bucket": {"column": "ts", "unit": "month"},
                    "temporal_column": "ts",
                }
            ],
            "foreign_keys": [
                {
                    "table": f"{target.schema}.items",
                    "columns": ["id"],
                    "references": f"{target.schema}.orders",
                    "ref_columns": ["item_id"],
                }
            ],
            "rules": [
                {
                    "name": "amount by country",
                    "tolerance": 0.1,
                    "source_query": rule.format(source.table("items")),
                    "target_query": rule.format(t),
                }
            ],
        },
    )
    report = run_reconcile(settings, checks=["all"])
    by_check = {r.check: r for r in report.results}
    counts = by_check["counts"].findings
    assert {(f.detail["scope"], str(f.detail["group"])) for f in counts} >= {
        ("total", "None"),
        ("group", "['fr', '2024-01-01']"),
    }
    drift = {(f.detail["problem"], f.columns) for f in by_check["schema"].findings}
    assert drift == {("extra in target", ("note",)), ("nullability differs", ("version",))}
    assert by_check["integrity"].findings[0].detail["orphans"] == ROWS - 2
    temporal = {(f.type, f.key) for f in by_check["temporal"].findings}
    assert temporal == {("stale", "[10]"), ("ahead", "[11]"), ("future", None)}
    rule_result = by_check["rules"]
    assert rule_result.status == "FAIL" and [f.key for f in rule_result.findings] == ['["de"]']
    sample = by_check["sample"].stats
    assert sample["sampled"] >= 1000 and sample["population"] == ROWS
    assert 0 <= sample["interval"][0] <= sample["error_rate"] <= sample["interval"][1]


def test_incremental_reads_only_changed_rows(pair: tuple[Database, Database]) -> None:
    source, target = pair
    settings = settings_for(
        source, target, updated_column="ts", reconcile={"incremental_overlap": 0}
    )
    assert run_reconcile(settings, checks=["checksums"], incremental=True).status == "PASS"
    run(source, "UPDATE {t} SET name = 'new', ts = now() WHERE id = 5")
    report = run_reconcile(settings, checks=["checksums"], incremental=True)
    assert report.mode == "incremental"
    assert keys(report) == {"mismatch [5]": ("name", "ts")}
    assert report.results[0].stats["changed_keys"] == 1


def audit(target: Database) -> list[tuple[str, str]]:
    with target.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f'SELECT correction, status FROM "{target.schema}".recon_corrections ORDER BY id'
            )
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_apply_corrects_audits_and_refuses_rows_changed_after_the_check(
    pair: tuple[Database, Database],
) -> None:
    source, target = pair
    run(target, *PLANTED)
    settings = settings_for(source, target)
    report = run_reconcile(settings, checks=["checksums"])
    dry = correct_run(settings, report.run_id)
    assert dry.counts == {"insert/planned": 3, "update/planned": 4, "review/planned": 2}
    assert audit(target) == []
    run(target, "UPDATE {t} SET amount = 555 WHERE id = 9000")  # changed after the check
    done = correct_run(settings, report.run_id, apply=True)
    assert done.counts == {
        "insert/applied": 3,
        "update/applied": 3,
        "update/refused": 1,
        "review/queued": 2,
    }
    with target.engine.connect() as conn:
        before, after = conn.execute(
            sa.text(
                f'SELECT before, after FROM "{target.schema}".recon_corrections c '
                f"WHERE key = '[17]'::jsonb"
            )
        ).one()
        amount = conn.execute(
            sa.text(f"SELECT amount FROM {target.table('items')} WHERE id = 9000")
        )
        assert amount.scalar_one() == 555
    assert float(before["amount"]) == float(after["amount"]) + 1
    again = run_reconcile(settings, checks=["checksums"])
    assert keys(again) == {
        "mismatch [9000]": ("amount",),
        "extra [25000]": (),
        "extra [10000000]": (),
    }


def test_export_sql_fixes_the_target_when_run(
    pair: tuple[Database, Database], tmp_path: Path
) -> None:
    source, target = pair
    run(target, *PLANTED, "UPDATE {t} SET name = 'it''s; -- odd' WHERE id = 33")
    settings = settings_for(source, target)
    report = run_reconcile(settings, checks=["checksums"])
    path = tmp_path / "fix.sql"
    summary = correct_run(settings, report.run_id, delete_extras=True, export_sql=path)
    assert summary.counts["delete/exported"] == 2 and audit(target) == []
    psql = subprocess.run(
        ["psql", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path), target.url],
        capture_output=True,
        text=True,
    )
    assert psql.returncode == 0, psql.stderr
    assert run_reconcile(settings, checks=["checksums", "counts"]).status == "PASS"


def test_review_queue_cli(
    pair: tuple[Database, Database], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = pair
    run(target, "INSERT INTO {t} (id, name) VALUES (30000, 'x'), (30001, 'y')")
    config = tmp_path / "c.yml"
    config.write_text(
        json.dumps(
            {
                "source_url": source.url,
                "target_url": target.url,
                "control_schema": target.schema,
                "reconcile": {
                    "tables": [
                        {"source": f"{source.schema}.items", "target": f"{target.schema}.items"}
                    ]
                },
            }
        )
    )
    assert main(["-c", str(config), "reconcile", "--check", "checksums", "--apply"]) == 1
    capsys.readouterr()
    assert main(["-c", str(config), "review", "list", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [(i["key"], i["type"], i["status"]) for i in items] == [
        ("[30000]", "extra", "open"),
        ("[30001]", "extra", "open"),
    ]
    first, second = items[0]["id"], items[1]["id"]
    assert (
        main(
            [
                "-c",
                str(config),
                "review",
                "resolve",
                str(first),
                "--action",
                "apply-source",
                "--note",
                "stray",
            ]
        )
        == 0
    )
    assert (
        main(["-c", str(config), "review", "resolve", str(second), "--action", "keep-target"]) == 0
    )
    assert (
        main(["-c", str(config), "review", "resolve", str(second), "--action", "keep-target"]) == 2
    )
    capsys.readouterr()
    assert main(["-c", str(config), "review", "summary"]) == 0
    assert "extra      medium    resolved        2" in capsys.readouterr().out
    with target.engine.connect() as conn:
        left = conn.execute(sa.text(f"SELECT id FROM {target.table('items')} WHERE id >= 30000"))
        assert left.scalars().all() == [30001]
    assert ("review:delete", "applied") in audit(target)
