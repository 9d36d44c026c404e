"""Reconciliation of a MariaDB source against a PostgreSQL target, on the real servers.

Each case of issue 18 writes rows to both databases and asserts the exact findings.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from cdc_recon.config import Settings, load_settings
from cdc_recon.reconcile.corrections import correct_run
from cdc_recon.reconcile.runner import ReconcileReport, run_reconcile
from tests.conftest import Database
from tests.integration.xengine import MariaDb, mariadb_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

ROWS = 20_000
MARIADB_DDL = """CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(100),
    amount DECIMAL(12,2), ts DATETIME(6), flag TINYINT(1), uid CHAR(36), doc JSON,
    price DOUBLE, raw BLOB, at TIMESTAMP(6) NULL)"""
PG_DDL = """CREATE TABLE {t} (id bigint PRIMARY KEY, name text, amount numeric,
    ts timestamptz, flag boolean, uid uuid, doc jsonb, price float8, raw bytea, at timestamptz)"""
MARIADB_FILL = """INSERT INTO items SELECT n, CONCAT('name ', n), (n MOD 1000) / 10.0,
        TIMESTAMP'2024-01-01 00:00:00' + INTERVAL n MINUTE, n MOD 3 = 0,
        CONCAT('0000', LPAD(HEX(n), 4, '0'), '-0000-4000-8000-', LPAD(HEX(n), 12, '0')),
        JSON_OBJECT('n', n, 'tags', JSON_ARRAY('a', 'b')), n / 7e0, CAST(HEX(n) AS BINARY), NULL
    FROM (SELECT seq AS n FROM seq_1_to_{n}) g"""
PG_FILL = """INSERT INTO {t} SELECT n, 'name ' || n, mod(n, 1000) / 10.0,
    timestamptz '2024-01-01 00:00:00+00' + n * interval '1 minute', mod(n, 3) = 0,
    ('0000' || lpad(upper(to_hex(n)), 4, '0') || '-0000-4000-8000-'
        || lpad(upper(to_hex(n)), 12, '0'))::uuid,
    jsonb_build_object('tags', jsonb_build_array('a', 'b'), 'n', n), n / 7.0::float8,
    convert_to(upper(to_hex(n)), 'UTF8'), NULL FROM generate_series(1, {n}) n"""


def pg_run(db: Database, *statements: str) -> None:
    with db.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement.format(t=db.table("items"), n=ROWS))


def settings_for(
    source: MariaDb, target: Database, reconcile: dict[str, Any] | None = None
) -> Settings:
    entry = {"source": source.table("items"), "target": f"{target.schema}.items"}
    small = {"segment_rows": 4000, "bisection_factor": 8, "bisection_threshold": 40}
    return load_settings(
        source_url=source.url,
        target_url=target.url,
        control_schema=target.schema,
        reconcile={**small, "tables": [entry], **(reconcile or {})},
    )


def findings(report: ReconcileReport, check: str = "checksums") -> dict[str, tuple[str, ...]]:
    result = next(r for r in report.results if r.check == check)
    assert result.status != "ERROR", result.error
    return {f"{f.type} {f.key}": f.columns for f in result.findings}


@pytest.fixture
def pair(mariadb_db: MariaDb, target_db: Database) -> tuple[MariaDb, Database]:  # noqa: F811
    mariadb_db.run(MARIADB_DDL, MARIADB_FILL.format(n=ROWS))
    pg_run(target_db, PG_DDL, PG_FILL)
    return mariadb_db, target_db


def test_equal_tables_of_two_engines_have_no_differences(pair: tuple[MariaDb, Database]) -> None:
    source, target = pair
    report = run_reconcile(settings_for(source, target), checks=["counts", "checksums"])
    assert findings(report) == {} and findings(report, "counts") == {}
    result = next(r for r in report.results if r.check == "checksums")
    assert result.stats["rows"] == ROWS and result.stats["fetched_rows"] >= 2 * ROWS


# Each difference of the list, planted in the target (or both sides where the
# point is that they must NOT differ).
SOURCE_PLANTED = (
    "UPDATE items SET name = NULL WHERE id = 12345",
    "UPDATE items SET name = '' WHERE id = 12346",
    "SET time_zone = '+05:00'",
    "UPDATE items SET at = '2024-06-01 17:00:00.25' WHERE id = 70",  # 12:00:00.25 UTC
    'UPDATE items SET doc = \'{"b": [1, 2], "a": {"y": 1.50, "x": null}}\' WHERE id IN (50, 51)',
)
TARGET_PLANTED = (
    "UPDATE {t} SET amount = amount + 1 WHERE id IN (17, 9000)",
    "UPDATE {t} SET name = '' WHERE id = 12345",
    "UPDATE {t} SET name = NULL WHERE id = 12346",
    "DELETE FROM {t} WHERE id IN (1, 4444, 20000)",
    "INSERT INTO {t} (id, name) VALUES (25000, 'extra'), (1000000000000, 'far')",
    "UPDATE {t} SET at = '2024-06-01 08:00:00.25-04' WHERE id = 70",  # the same instant
    # the same JSON, keys in another order and spacing; then one value changed
    """UPDATE {t} SET doc = '{{"a":{{"x":null,"y":1.5}},"b":[1,2]}}' WHERE id = 50""",
    """UPDATE {t} SET doc = '{{"a":{{"x":null,"y":1.51}},"b":[1,2]}}' WHERE id = 51""",
    "UPDATE {t} SET ts = ts + interval '1 microsecond' WHERE id = 60",
    "UPDATE {t} SET price = price + 1e-12 WHERE id = 80",
    "UPDATE {t} SET name = name || ' ' WHERE id = 90",
    "UPDATE {t} SET name = upper(name) WHERE id = 91",
    "UPDATE {t} SET flag = NOT flag WHERE id = 92",
    "UPDATE {t} SET uid = NULL WHERE id = 93",
    "UPDATE {t} SET raw = raw || '\\x00'::bytea WHERE id = 94",
)
EXPECTED = {
    'missing ["1"]': (),
    'missing ["4444"]': (),
    'missing ["20000"]': (),
    'extra ["25000"]': (),
    'extra ["1000000000000"]': (),
    'mismatch ["17"]': ("amount",),
    'mismatch ["9000"]': ("amount",),
    'mismatch ["12345"]': ("name",),
    'mismatch ["12346"]': ("name",),
    'mismatch ["51"]': ("doc",),
    'mismatch ["60"]': ("ts",),
    'mismatch ["80"]': ("price",),
    'mismatch ["90"]': ("name",),
    'mismatch ["91"]': ("name",),
    'mismatch ["92"]': ("flag",),
    'mismatch ["93"]': ("uid",),
    'mismatch ["94"]': ("raw",),
}


def test_each_planted_difference_is_found_and_nothing_else(
    pair: tuple[MariaDb, Database],
) -> None:
    """NULL against '', trailing spaces and case (byte-exact under utf8mb4_general_ci),
    1.50 = 1.5 (every row: DECIMAL(12,2) against unscaled numeric), one instant in two
    zones, JSON key order, a 1-µs shift, a double's last bits, a 10^12 gap in the key."""
    source, target = pair
    source.run(*SOURCE_PLANTED)
    pg_run(target, *TARGET_PLANTED)
    report = run_reconcile(settings_for(source, target), checks=["counts", "checksums"])
    assert findings(report) == EXPECTED
    counts = next(r for r in report.results if r.check == "counts")
    assert (counts.stats["source_rows"], counts.stats["target_rows"]) == (ROWS, ROWS - 1)


def test_sample_and_schema_across_engines(pair: tuple[MariaDb, Database]) -> None:
    """The sample finds a changed row among equal ones; the schema check compares type
    families (DATETIME(6) = timestamptz, CHAR(36) carries a uuid) and finds a real drift;
    the values of the drifted column still compare as instants (its text is parsed)."""
    source, target = pair
    pg_run(target, "UPDATE {t} SET amount = amount + 1", "ALTER TABLE {t} ALTER ts TYPE text")
    settings = settings_for(source, target, {"sample_margin": 0.05})
    report = run_reconcile(settings, checks=["sample", "schema"])
    sample = next(r for r in report.results if r.check == "sample")
    assert sample.status == "FAIL" and sample.stats["errors"] == sample.stats["sampled"] > 300
    assert {f.columns for f in sample.findings} == {("amount",)}
    schema = next(r for r in report.results if r.check == "schema")
    assert [(f.columns, f.detail["families"]) for f in schema.findings] == [
        (("ts",), ["timestamp", "text"])
    ]


KEYED_DDL = """CREATE TABLE pairs (a VARCHAR(20), b VARCHAR(20), v INT, PRIMARY KEY (a, b))
    COLLATE utf8mb4_general_ci"""
KEYED_ROWS = [
    ("x,y", "z", 1),
    ("x", "y,z", 2),
    ('a"b', "[1]", 3),
    ("K", "k", 4),
    ("trail ", "t", 5),
]
KEYED_ROWS += [(f"k{n:05}", "v", n) for n in range(3000)]


def test_composite_text_keys_under_a_case_insensitive_collation(
    mariadb_db: MariaDb,  # noqa: F811
    target_db: Database,
) -> None:
    """Keys are compared byte for byte although utf8mb4_general_ci calls 'K' = 'k' and
    'trail ' = 'trail': a key that differs only so is missing on one side and extra on
    the other. Values holding the separator (',') or JSON syntax are keys like others."""
    mariadb_db.run(KEYED_DDL)
    mariadb_db.insert("INSERT INTO pairs VALUES (%s, %s, %s)", KEYED_ROWS)
    table = target_db.table("pairs")
    with target_db.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (a text, b text, v int, PRIMARY KEY (a, b))")
        rows = [r for r in KEYED_ROWS if r[0] not in ("K", "trail ")]
        rows += [("k", "k", 4), ("trail", "t", 5)]
        conn.exec_driver_sql(f"INSERT INTO {table} VALUES (%s, %s, %s)", rows)
        conn.exec_driver_sql(f"UPDATE {table} SET v = 20 WHERE a = 'x' AND b = 'y,z'")
    entry = {"source": mariadb_db.table("pairs"), "target": f"{target_db.schema}.pairs"}
    settings = load_settings(
        source_url=mariadb_db.url,
        target_url=target_db.url,
        control_schema=target_db.schema,
        reconcile={
            "segment_rows": 1000,
            "bisection_factor": 4,
            "bisection_threshold": 30,
            "tables": [entry],
        },
    )
    report = run_reconcile(settings, checks=["checksums"])
    assert findings(report) == {
        'mismatch ["x", "y,z"]': ("v",),
        'missing ["K", "k"]': (),
        'extra ["k", "k"]': (),
        'missing ["trail ", "t"]': (),
        'extra ["trail", "t"]': (),
    }


def test_apply_corrects_the_target_from_mariadb_and_refuses_rows_changed_since(
    pair: tuple[MariaDb, Database],
) -> None:
    """Every planted difference is corrected from the MariaDB source (json, bytes, an
    instant, a double, an uuid written back as PostgreSQL reads them), except a row the
    target changed after the check (compare-and-set); extras wait for review."""
    source, target = pair
    source.run(*SOURCE_PLANTED)
    pg_run(target, *TARGET_PLANTED)
    settings = settings_for(source, target)
    report = run_reconcile(settings, checks=["checksums"])
    pg_run(target, "UPDATE {t} SET amount = 555 WHERE id = 9000")  # changed after the check
    done = correct_run(settings, report.run_id, apply=True)
    assert done.counts == {
        "insert/applied": 3,
        "update/applied": 11,
        "update/refused": 1,
        "review/queued": 2,
    }
    again = run_reconcile(settings, checks=["checksums", "counts"])
    assert findings(again) == {
        'mismatch ["9000"]': ("amount",),
        'extra ["25000"]': (),
        'extra ["1000000000000"]': (),
    }


def test_export_sql_from_mariadb_fixes_the_target_when_run(
    pair: tuple[MariaDb, Database], tmp_path: Path
) -> None:
    source, target = pair
    source.run(*SOURCE_PLANTED)
    pg_run(target, *TARGET_PLANTED)
    settings = settings_for(source, target)
    report = run_reconcile(settings, checks=["checksums"])
    path = tmp_path / "fix.sql"
    summary = correct_run(settings, report.run_id, delete_extras=True, export_sql=path)
    assert summary.counts["delete/exported"] == 2
    psql = subprocess.run(
        ["psql", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path), target.url],
        capture_output=True,
        text=True,
    )
    assert psql.returncode == 0, psql.stderr
    assert run_reconcile(settings, checks=["checksums", "counts"]).status == "PASS"


def test_temporal_rules_integrity_and_incremental_from_mariadb(
    pair: tuple[MariaDb, Database],
) -> None:
    """The other checks with a MariaDB source: a 1-µs newer target time is `ahead`,
    a rule's per-group counts differ where rows were deleted or added, the target's
    foreign key finds its orphans, and an incremental run reads only the changed keys."""
    source, target = pair
    child = f"{target.schema}.items_child"
    pg_run(
        target,
        f"CREATE TABLE {child} (id int PRIMARY KEY, item bigint)",
        f"INSERT INTO {child} VALUES (1, 2), (2, 99999999)",
    )
    entry = {
        "source": source.table("items"),
        "target": f"{target.schema}.items",
        "temporal_column": "ts",
        "updated_column": "at",
    }
    rule = {
        "name": "per ten thousand",
        "source_query": f"SELECT id DIV 10000, count(*) FROM {source.table('items')} GROUP BY 1",
        "target_query": f"SELECT id / 10000, count(*) FROM {target.schema}.items GROUP BY 1",
    }
    settings = load_settings(
        source_url=source.url,
        target_url=target.url,
        control_schema=target.schema,
        reconcile={
            "tables": [entry],
            "rules": [rule],
            "foreign_keys": [
                {
                    "table": f"{target.schema}.items",
                    "columns": ["id"],
                    "references": child,
                    "ref_columns": ["id"],
                }
            ],
        },
    )
    assert run_reconcile(settings, checks=["checksums"]).status == "PASS"
    pg_run(
        target,
        *TARGET_PLANTED[3:5],
        "UPDATE {t} SET ts = ts + interval '1 microsecond' WHERE id = 60",
    )
    report = run_reconcile(settings, checks=["temporal", "rules", "integrity"])
    assert findings(report, "temporal") == {'ahead ["60"]': ("ts",)}
    assert findings(report, "rules") == {'rule ["0"]': (), 'rule ["100000000"]': ()}
    orphans = next(r for r in report.results if r.check == "integrity").findings
    assert [f.detail["orphans"] for f in orphans] == [ROWS - 2]  # all but ids 1 (gone) and 2
    source.run("UPDATE items SET name = 'changed', at = NOW(6) WHERE id = 77")
    incremental = run_reconcile(settings, checks=["checksums"], incremental=True)
    result = next(r for r in incremental.results if r.check == "checksums")
    assert result.stats["mode"] == "incremental" and result.stats["changed_keys"] == 1
    assert findings(incremental) == {'mismatch ["77"]': ("name", "at")}


def test_composite_keys_with_unsigned_integers_past_two_to_the_53(
    mariadb_db: MariaDb,  # noqa: F811
    target_db: Database,
) -> None:
    """Neighbouring BIGINT UNSIGNED key parts that a double cannot tell apart: the one
    changed row is found and its neighbours are not reported (key parts are bound as
    integers, `SideSql.bound`; the key texts decide matches in any case)."""
    big = 2**64 - 400
    rows = [(big + n, "k", n) for n in range(300)]
    mariadb_db.run("CREATE TABLE wide (k BIGINT UNSIGNED, s VARCHAR(5), v INT, PRIMARY KEY (k, s))")
    mariadb_db.insert("INSERT INTO wide VALUES (%s, %s, %s)", rows)
    table = target_db.table("wide")
    with target_db.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (k numeric(20,0), s text, v int, PRIMARY KEY (k, s))"
        )
        conn.exec_driver_sql(f"INSERT INTO {table} VALUES (%s, %s, %s)", rows)
        conn.exec_driver_sql(f"UPDATE {table} SET v = -1 WHERE k = %(k)s", {"k": big + 150})
    entry = {"source": mariadb_db.table("wide"), "target": f"{target_db.schema}.wide"}
    settings = load_settings(
        source_url=mariadb_db.url,
        target_url=target_db.url,
        control_schema=target_db.schema,
        reconcile={"bisection_factor": 4, "bisection_threshold": 3, "tables": [entry]},
    )
    report = run_reconcile(settings, checks=["checksums"])
    assert findings(report) == {f'mismatch ["{big + 150}", "k"]': ("v",)}
