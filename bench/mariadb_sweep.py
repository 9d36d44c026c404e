"""The MariaDB change log's costs: trigger overhead on writes, and a sweep of one window.

On the stack's MariaDB and PostgreSQL:

1. **trigger overhead**: N inserts (in transactions of 500) and one UPDATE of those N
   rows, into a fresh table without the change-log triggers and then with them
   (`cdc_recon.source_db.mariadb_changelog`), `--repeats` times each; the ratio of the
   medians;
2. **sweep**: `sweep_once` (replay off) over the window the logged changes fill, first
   with an empty ledger (every change missed: stage, count, classify, record) and then
   with a ledger that holds a row per logged change (all applied: the usual case).

Last line: `RESULT mariadb_sweep changes=<n> trigger_ratio=<r> applied_s=<s> missed_s=<s>`.

    scripts/stack up && eval "$(scripts/stack env)"
    .venv/bin/python bench/mariadb_sweep.py --rows 20000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdc_recon.config import Settings, load_settings  # noqa: E402
from cdc_recon.control_schema import init_control_schema  # noqa: E402
from cdc_recon.mariadb.connection import MariaDbUrl, connect, parse_url  # noqa: E402
from cdc_recon.pg.engine import create_engine  # noqa: E402
from cdc_recon.sweep.adapters.mariadb_trigger import MariaDbTriggerLog  # noqa: E402
from cdc_recon.sweep.sweeper import SweepRun, sweep_once  # noqa: E402

BATCH = 500


def write(url: MariaDbUrl, table: str, first: int, rows: int) -> float:
    """Seconds for `rows` inserts from key `first` and one UPDATE of them."""
    insert = f"INSERT INTO source.{table} VALUES (%s, %s, %s)"
    with connect(url) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        for start in range(first, first + rows, BATCH):
            cur.executemany(insert, [(k, f"v{k}", k) for k in range(start, start + BATCH)])
            conn.commit()
        cur.execute(f"UPDATE source.{table} SET n = n + 1 WHERE id >= %s", (first,))
        conn.commit()
        return time.perf_counter() - started


def fill_ledger(engine: sa.Engine, url: MariaDbUrl, settings: Settings, table: str) -> None:
    """A ledger row per logged change, as the service would have written it."""
    db, schema = settings.sweeper.changelog_schema, settings.control_schema
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, source_table, key_text, op, changed_s FROM {db}.changes")
        entries = cur.fetchall()
    rows = [
        {"cid": f"{t}:{k}:0-1-{i}", "t": t, "tt": f"{schema}.{table}", "k": k, "op": op,
         "p": [1, i, 0], "ms": s * 1000}
        for i, t, k, op, s in entries
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f'INSERT INTO "{schema}".ledger (change_id, source_table, target_table, '
                "key_text, op, position, tx, source_ts_ms, source_ts, outcome) VALUES (:cid, "
                ":t, :tt, :k, :op, :p, 'x', :ms, to_timestamp(:ms / 1000.0), 'applied')"
            ),
            rows,
        )


def wait_closed(log: MariaDbTriggerLog, second: int, timeout: float = 10.0) -> None:
    """Until MariaDB's clock has closed `second` (the last logged one is swept whole)."""
    deadline = time.monotonic() + timeout
    while log.closed_until(0).timestamp() <= second:
        if time.monotonic() > deadline:
            raise SystemExit(f"MariaDB's clock did not pass second {second} in {timeout:g} s")
        time.sleep(0.1)


def timed_sweep(settings: Settings, **window: Any) -> tuple[SweepRun, float]:
    started = time.perf_counter()
    run = sweep_once(settings, replay=False, **window)
    return run, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per write run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    url = parse_url(os.environ["CDC_RECON_MARIADB_URL"])
    target = os.environ["CDC_RECON_TARGET_URL"]
    suffix = uuid.uuid4().hex[:6]
    table, log_db, schema = f"bench_{suffix}", f"cdcr_bench_{suffix}", f"bench_{suffix}"
    engine = create_engine(target)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(sa.text(f'CREATE TABLE "{schema}".{table} (id numeric(20) PRIMARY KEY, '
                             "v text, n int)"))  # fmt: skip
    init_control_schema(engine, schema)
    mapping = {"source": f"source.{table}", "target": f"{schema}.{table}", "key": ["id"],
               "connector": "mysql"}  # fmt: skip
    settings = load_settings(
        None, source_url=str(url), target_url=target, control_schema=schema, tables=[mapping],
        sweeper={"adapter": "mariadb_trigger", "changelog_schema": log_db, "grace": 0,
                 "window": 86400},
    )  # fmt: skip
    log = MariaDbTriggerLog(settings)
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE source.{table} (id BIGINT UNSIGNED PRIMARY KEY, "
                    "v VARCHAR(40), n INT)")  # fmt: skip
        conn.commit()
    try:
        rows = args.rows
        plain = [write(url, table, r * rows, rows) for r in range(args.repeats)]
        log.install([f"source.{table}"])
        first = args.repeats * rows
        logged = [write(url, table, first + r * rows, rows) for r in range(args.repeats)]
        ratio = statistics.median(logged) / statistics.median(plain)
        print(f"{rows} inserts + {rows} updates: {statistics.median(plain):.2f} s without "
              f"triggers, {statistics.median(logged):.2f} s with (x{ratio:.2f})")  # fmt: skip
        wait_closed(log, int(time.time()))
        missed, missed_s = timed_sweep(settings)
        fill_ledger(engine, url, settings, table)
        window = {"window_from": missed.window_from, "window_to": missed.window_to}
        applied, applied_s = timed_sweep(settings, **window)
        print(f"sweep, every change missed: {missed_s:.2f} s ({missed.summary()})")
        print(f"sweep, every change applied: {applied_s:.2f} s ({applied.summary()})")
        print(f"RESULT mariadb_sweep changes={applied.total} trigger_ratio={ratio:.2f} "
              f"applied_s={applied_s:.2f} missed_s={missed_s:.2f}")  # fmt: skip
    finally:
        log.uninstall(drop_log=True)
        with connect(url) as conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS source.{table}")
            cur.execute(f"DROP DATABASE IF EXISTS {log_db}")
            conn.commit()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


if __name__ == "__main__":
    main()
