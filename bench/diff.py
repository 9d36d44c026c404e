"""Checksum diff time: `cdc-recon reconcile --check checksums` against reladiff 0.6.

Builds, with set-based SQL (`INSERT ... SELECT generate_series`), in a fresh schema of
the SOURCE and of the TARGET database, the same N-row table (bigint key, text, numeric,
timestamptz, boolean), then scatters D differences over the target: updates of one
column, deletes and inserts, at random keys (seeded).

Then, in the same run on the same tables, times:

1. **ours**: `run_reconcile(checks=["checksums"])`, the function behind the command
   (catalogs, segment checksums inside each database, bisection, row diff, persisted
   findings);
2. **reladiff 0.6** (`reladiff.diff_tables`, threaded, the same worker count), the
   baseline, with the same compared columns;

and checks that both report the same differing keys. Needs the `bench` extra
(`pip install -e '.[bench]'`).

`--source mariadb` builds the source table in a fresh database of the stack's MariaDB
(`CDC_RECON_MARIADB_URL`) with the MySQL types of a migration (BIGINT, VARCHAR,
DECIMAL(12,2), DATETIME(6), TINYINT(1)) against the same PostgreSQL target table:
ours then compares canonical texts across engines (md5 row hashes summed per segment
in each database), reladiff its own MySQL-to-PostgreSQL normalisation.

Last line:
`RESULT diff rows=<n> seconds=<s> reladiff_seconds=<s> speedup=<x> same_keys=<true|false>`.

    scripts/stack up && eval "$(scripts/stack env)"
    .venv/bin/python bench/diff.py --rows 1000000 --diffs 100
    .venv/bin/python bench/diff.py --source mariadb --rows 1000000 --diffs 100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdc_recon.config import Settings, load_settings  # noqa: E402
from cdc_recon.mariadb.connection import connect, parse_url  # noqa: E402
from cdc_recon.pg.engine import create_engine  # noqa: E402
from cdc_recon.reconcile.runner import run_reconcile  # noqa: E402

COLUMNS = ("name", "amount", "ts", "flag")
DDL = """CREATE TABLE {t} (id bigint PRIMARY KEY, name text, amount numeric(12,2),
    ts timestamptz, flag boolean)"""
FILL = """INSERT INTO {t} SELECT g, 'customer ' || g, mod(g, 100000) / 100.0,
    timestamptz '2024-01-01 00:00:00+00' + g * interval '7 seconds', mod(g, 3) = 0
    FROM generate_series(1, %(rows)s) g"""


MARIADB_DDL = """CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR(100),
    amount DECIMAL(12,2), ts DATETIME(6), flag TINYINT(1))"""
MARIADB_FILL = """INSERT INTO t SELECT seq, CONCAT('customer ', seq), MOD(seq, 100000) / 100.0,
    TIMESTAMP'2024-01-01 00:00:00' + INTERVAL (seq * 7) SECOND, MOD(seq, 3) = 0
    FROM seq_1_to_{rows}"""


def mariadb_database(url: str, database: str) -> str:
    """`url` (a MariaDB server URL) naming `database` instead."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(path=f"/{database}").geturl()


def build_mariadb(url: str, database: str, rows: int) -> None:
    """The source table in a new MariaDB database, filled from the sequence engine."""
    with connect(parse_url(url)) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{database}`")
        cur.execute(MARIADB_DDL)
        cur.execute(MARIADB_FILL.format(rows=int(rows)))
        conn.commit()
        cur.execute("ANALYZE TABLE t")
        cur.fetchall()


def drop_mariadb(url: str, database: str) -> None:
    with connect(parse_url(url)) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{database}`")


def build(engine: sa.Engine, schema: str, rows: int) -> None:
    table = f'"{schema}".t'
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        conn.exec_driver_sql(DDL.format(t=table))
        conn.exec_driver_sql(FILL.format(t=table), {"rows": rows})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM ANALYZE {table}")


def scatter(engine: sa.Engine, schema: str, rows: int, diffs: int, seed: int) -> set[int]:
    """Updates, deletes and inserts at random keys of the target; returns the keys."""
    rng = random.Random(seed)
    chosen = rng.sample(range(1, rows + 1), diffs)
    third = diffs // 3
    updates, deletes = chosen[:third], chosen[third : 2 * third]
    inserts = [rows + 1 + rng.randrange(rows) for _ in range(diffs - 2 * third)]
    table = f'"{schema}".t'
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE {table} SET amount = amount + 1 WHERE id = ANY(%(k)s)", {"k": updates}
        )
        conn.exec_driver_sql(f"DELETE FROM {table} WHERE id = ANY(%(k)s)", {"k": deletes})
        conn.exec_driver_sql(
            f"INSERT INTO {table} SELECT k, 'new ' || k, 1.5, now(), true "
            "FROM unnest(%(k)s::bigint[]) k ON CONFLICT DO NOTHING",
            {"k": inserts},
        )
    return set(updates) | set(deletes) | set(inserts)


def ours(settings: Settings) -> tuple[float, set[int]]:
    started = time.perf_counter()
    report = run_reconcile(settings, checks=["checksums"])
    seconds = time.perf_counter() - started
    found = {int(json.loads(f.key)[0]) for r in report.results for f in r.findings if f.key}
    return seconds, found


def theirs(
    source_url: str, target_url: str, schema: str, workers: int, source_table: Any = None
) -> tuple[float, set[int]]:
    import reladiff

    started = time.perf_counter()
    left = reladiff.connect_to_table(
        source_url,
        source_table or (schema, "t"),
        "id",
        thread_count=workers,
        extra_columns=COLUMNS,
    )
    right = reladiff.connect_to_table(
        target_url, (schema, "t"), "id", thread_count=workers, extra_columns=COLUMNS
    )
    try:
        rows = list(reladiff.diff_tables(left, right, threaded=True, max_threadpool_size=workers))
        seconds = time.perf_counter() - started
    finally:  # its pooled connections hold locks that DROP SCHEMA would wait for
        left.database.close()
        right.database.close()
    return seconds, {int(row[0]) for _, row in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--diffs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--skip-reladiff", action="store_true", help="time ours only")
    parser.add_argument("--keep", action="store_true", help="keep the schemas")
    parser.add_argument(
        "--source",
        choices=("postgres", "mariadb"),
        default="postgres",
        help="the source engine (mariadb: CDC_RECON_MARIADB_URL)",
    )
    args = parser.parse_args()
    target_url = os.environ["CDC_RECON_TARGET_URL"]
    schema = f"bench_diff_{uuid.uuid4().hex[:8]}"
    if args.source == "mariadb":
        return _mariadb(args, schema, os.environ["CDC_RECON_MARIADB_URL"], target_url)
    source_url = os.environ["CDC_RECON_SOURCE_URL"]
    engines = [create_engine(source_url), create_engine(target_url)]
    try:
        return _run(args, engines, schema, source_url, target_url)
    finally:
        if not args.keep:
            for engine in engines:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for engine in engines:
            engine.dispose()


def _mariadb(args: argparse.Namespace, schema: str, server_url: str, target_url: str) -> int:
    """The same table as a MariaDB source (database `schema`) against the PostgreSQL
    target (schema `schema`)."""
    target = create_engine(target_url)
    source_url = mariadb_database(server_url, schema)
    try:
        started = time.perf_counter()
        build_mariadb(server_url, schema, args.rows)
        build(target, schema, args.rows)
        planted = scatter(target, schema, args.rows, args.diffs, args.seed)
        print(
            f"built {args.rows} rows in MariaDB and in PostgreSQL, {len(planted)} "
            f"differences, in {time.perf_counter() - started:.1f}s"
        )
        settings = load_settings(
            source_url=source_url,
            target_url=target_url,
            control_schema=schema,
            reconcile={
                "workers": args.workers,
                "tables": [{"source": f"{schema}.t", "target": f"{schema}.t"}],
            },
        )
        reladiff_url = "mysql://" + source_url.split("://", 1)[1]
        return _compare(args, settings, planted, reladiff_url, target_url, schema, "t")
    finally:
        if not args.keep:
            drop_mariadb(server_url, schema)
            with target.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        target.dispose()


def _run(
    args: argparse.Namespace,
    engines: list[sa.Engine],
    schema: str,
    source_url: str,
    target_url: str,
) -> int:
    started = time.perf_counter()
    for engine in engines:
        build(engine, schema, args.rows)
    planted = scatter(engines[1], schema, args.rows, args.diffs, args.seed)
    print(
        f"built 2 x {args.rows} rows, {len(planted)} differences, "
        f"in {time.perf_counter() - started:.1f}s"
    )
    settings = load_settings(
        source_url=source_url,
        target_url=target_url,
        control_schema=schema,
        reconcile={"workers": args.workers, "tables": [{"source": f"{schema}.t"}]},
    )
    return _compare(args, settings, planted, source_url, target_url, schema)


def _compare(
    args: argparse.Namespace,
    settings: Settings,
    planted: set[int],
    source_url: str,
    target_url: str,
    schema: str,
    source_table: Any = None,
) -> int:
    """Ours, then reladiff on the same tables; the RESULT line."""
    seconds, found = ours(settings)
    print(
        f"cdc-recon reconcile --check checksums: {seconds:.2f}s, {len(found)} keys, "
        f"planted found: {found == planted}"
    )
    if args.skip_reladiff:
        print(
            f"RESULT diff rows={args.rows} seconds={seconds:.2f} reladiff_seconds=nan "
            f"speedup=nan same_keys=false"
        )
        return 0
    rd_seconds, rd_found = theirs(source_url, target_url, schema, args.workers, source_table)
    print(f"reladiff 0.6 diff_tables: {rd_seconds:.2f}s, {len(rd_found)} keys")
    same = found == rd_found
    print(
        f"RESULT diff rows={args.rows} seconds={seconds:.2f} reladiff_seconds={rd_seconds:.2f} "
        f"speedup={rd_seconds / seconds:.1f} same_keys={str(same).lower()}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
