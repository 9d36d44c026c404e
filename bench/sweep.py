"""Sweeper detection time: one closed window of N source changes against the ledger.

Builds, with set-based SQL (`INSERT ... SELECT generate_series`):

- in the SOURCE database, a trigger change log (`cdc_recon.source_db.changelog`) holding N
  changes of one mapped table, one key each, spread over 200 seconds an hour ago;
- in the TARGET database, a control schema whose ledger holds all of them but a random,
  known set of M; of those, S get a newer position in `key_state` (superseded: a later
  change of the key was applied), so M - S are really missed.

Then times `sweep_once` over that window with replay off (detection only: stage by COPY
from the source through a pipe into the target, anti-join, classification, records),
and, in the same run, two baselines:

1. **copy floor**: only moving the window's rows from the source into a target temp table;
2. **per change**: one ledger lookup round trip per change, on the first `--sample`
   changes, extrapolated to N (the naive design).

Last line: `RESULT sweep changes=<n> seconds=<s> missed_found=<n> missed_expected=<n>`.

    scripts/stack up && eval "$(scripts/stack env)"
    .venv/bin/python bench/sweep.py --changes 1000000 --missing 500
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdc_recon.config import Settings, load_settings  # noqa: E402
from cdc_recon.control_schema import init_control_schema  # noqa: E402
from cdc_recon.pg.engine import create_engine  # noqa: E402
from cdc_recon.pg.raw import raw_connection  # noqa: E402
from cdc_recon.pg.sql import change_id_order  # noqa: E402
from cdc_recon.source_db import changelog  # noqa: E402
from cdc_recon.sweep import queries as sweep_sql  # noqa: E402
from cdc_recon.sweep.adapters.base import Window  # noqa: E402
from cdc_recon.sweep.adapters.pg_trigger import PgTriggerLog  # noqa: E402
from cdc_recon.sweep.sweeper import SweepRun, sweep_once  # noqa: E402

TABLE = "public.customers"
SPREAD_S = 200.0


def build_source(engine: sa.Engine, schema: str, changes: int, start: dt.datetime) -> None:
    """N entries, key g, xid 5000 + g / 3 (three changes per transaction), LSN increasing."""
    step_us = SPREAD_S * 1e6 / changes
    with engine.begin() as conn:
        for statement in changelog.changelog_ddl(schema):
            conn.execute(sa.text(statement))
        conn.execute(
            sa.text(
                f'INSERT INTO "{schema}".changes (source_table, key_text, op, txid, lsn, '
                "changed_at) SELECT :table, '[\"' || g || '\"]', 'u', "
                "(2::bigint << 32) + 5000 + g / 3, '0/0'::pg_lsn + (1000000 + g * 120), "
                ":start + g * make_interval(secs => :step / 1e6) "
                "FROM generate_series(1, :n) g"
            ),
            {"table": TABLE, "start": start, "step": step_us, "n": changes},
        )
        conn.execute(sa.text(f'ANALYZE "{schema}".changes'))


def build_target(
    engine: sa.Engine,
    schema: str,
    changes: int,
    missing: list[int],
    superseded: list[int],
    start: dt.datetime,
) -> None:
    """Ledger rows for every change but `missing`; newer key_state for `superseded`."""
    init_control_schema(engine, schema)
    s = f'"{schema}"'
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE missing (g int PRIMARY KEY)"))
        conn.execute(
            sa.text("INSERT INTO missing SELECT unnest(CAST(:m AS int[]))"), {"m": missing}
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {s}.ledger (change_id, source_table, target_table, key_text, op, "
                "position, tx, source_ts_ms, source_ts, topic, kafka_partition, kafka_offset, "
                "outcome) SELECT :table || ':[\"' || g || '\"]:' || (5000 + g / 3), :table, "
                ":target, '[\"' || g || '\"]', 'u', ARRAY[1000000 + g * 120::bigint], "
                "(5000 + g / 3)::text, ms, to_timestamp(ms::float8 / 1000), 'bench', 0, g, "
                "'applied' FROM generate_series(1, :n) g, "
                "LATERAL (SELECT :start_ms + (g * :step_ms)::bigint AS ms) t "
                "WHERE NOT EXISTS (SELECT 1 FROM missing m WHERE m.g = g.g)"
            ),
            {
                "table": TABLE,
                "target": f"{schema}.customers",
                "start_ms": int(start.timestamp() * 1000),
                "step_ms": SPREAD_S * 1000 / changes,
                "n": changes,
            },
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {s}.key_state (target_table, key_text, position, deleted) "
                "SELECT :target, '[\"' || g || '\"]', ARRAY[1000000 + g * 120 + 60::bigint], false "
                "FROM unnest(CAST(:g AS int[])) g"
            ),
            {"target": f"{schema}.customers", "g": superseded},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"VACUUM ANALYZE {s}.ledger"))
        conn.execute(sa.text(f"VACUUM ANALYZE {s}.key_state"))


def settings_for(schema: str, source_schema: str) -> Settings:
    return load_settings(
        None,
        source_url=os.environ.get("CDC_RECON_SOURCE_URL"),
        control_schema=schema,
        topics=[],
        tables=[{"source": TABLE, "target": f"{schema}.customers", "key": ["id"]}],
        sweeper={"changelog_schema": source_schema, "window": 300, "grace": 0},
    )


def copy_floor(settings: Settings, window: Window) -> float:
    """Only the transfer: the window's rows into a target temp table, same pipe and batches."""
    target = create_engine(settings.target_url, name="target")
    log = PgTriggerLog(settings)
    try:
        started = time.perf_counter()
        with raw_connection(target, name="target") as conn, conn.cursor() as cur:
            cur.execute(sweep_sql.session_settings())
            cur.execute(sweep_sql.create_stage()[0])
            log.stage(cur, window)
            conn.commit()
        return time.perf_counter() - started
    finally:
        log.close()
        target.dispose()


def per_change(settings: Settings, source_schema: str, window: Window, sample: int) -> float:
    """Seconds for `sample` changes with one ledger round trip each."""
    source = create_engine(settings.source_url or "", name="source")
    target = create_engine(settings.target_url, name="target")
    try:
        with source.connect() as conn:
            ids = (
                conn.execute(
                    sa.text(
                        "SELECT source_table || ':' || key_text || ':' || (txid & 4294967295) "
                        f'FROM "{source_schema}".changes '
                        "WHERE changed_at >= :a AND changed_at < :b "
                        "ORDER BY changed_at, id LIMIT :n"
                    ),
                    {"a": window.start, "b": window.end, "n": sample},
                )
                .scalars()
                .all()
            )
        order = change_id_order("change_id")
        lookup = sa.text(
            f'SELECT 1 FROM "{settings.control_schema}".ledger '
            f"WHERE {order} = {change_id_order(':c')} AND change_id = :c"
        )
        started = time.perf_counter()
        with target.connect() as conn:
            for change_id in ids:
                conn.execute(lookup, {"c": change_id}).first()
        return time.perf_counter() - started
    finally:
        source.dispose()
        target.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--missing", type=int, default=500, help="changes left out of the ledger")
    parser.add_argument("--superseded", type=int, default=100, help="of those, superseded")
    parser.add_argument("--sample", type=int, default=20_000, help="per-change baseline size")
    parser.add_argument("--keep", action="store_true", help="keep the schemas afterwards")
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    schema, source_schema = f"bench_sweep_{run_id}", f"bench_sweep_log_{run_id}"
    rng = random.Random(run_id)
    # the newest changes stay in the ledger: nothing after the last applied one
    missing = sorted(rng.sample(range(1, args.changes - 100), args.missing))
    superseded = rng.sample(missing, args.superseded)
    expected = len(missing) - len(superseded)
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
    window = Window(start - dt.timedelta(seconds=1), start + dt.timedelta(seconds=SPREAD_S + 1))

    settings = settings_for(schema, source_schema)
    source = create_engine(settings.source_url or "", name="source")
    target = create_engine(settings.target_url, name="target")
    try:
        began = time.perf_counter()
        build_source(source, source_schema, args.changes, start)
        build_target(target, schema, args.changes, missing, superseded, start)
        built = time.perf_counter() - began
        print(f"built {args.changes} changes, {len(missing)} missing in {built:.1f}s")
        run, seconds = timed_sweep(settings, window)
        floor = copy_floor(settings, window)
        naive = per_change(settings, source_schema, window, args.sample)
        wanted = {f'{TABLE}:["{g}"]:{5000 + g // 3}' for g in set(missing) - set(superseded)}
        exact = recorded_missed(target, schema) == wanted
        report(run, seconds, floor, naive * args.changes / args.sample, exact, expected)
    finally:
        if not args.keep:
            drop(source, source_schema)
            drop(target, schema)
        source.dispose()
        target.dispose()


def report(
    run: SweepRun, seconds: float, floor: float, naive: float, exact: bool, expected: int
) -> None:
    print(
        f"sweep {seconds:.2f}s ({run.total / seconds:,.0f} changes/s): applied {run.applied}, "
        f"superseded {run.superseded}, missed {run.missed}, in flight {run.in_flight}"
    )
    print(
        f"baselines: copy floor {floor:.2f}s (sweep = {seconds / floor:.2f}x of it), "
        f"per change {naive:.0f}s extrapolated (sweep is {naive / seconds:.0f}x faster)"
    )
    print("missed_changes holds exactly the expected ids" if exact else "MISMATCH of missed ids")
    print(
        f"RESULT sweep changes={run.total} seconds={seconds:.2f} "
        f"missed_found={run.missed} missed_expected={expected}"
    )
    if not exact:
        sys.exit(1)


def timed_sweep(settings: Settings, window: Window) -> tuple[SweepRun, float]:
    started = time.perf_counter()
    run = sweep_once(settings, window_from=window.start, window_to=window.end, replay=False)
    return run, time.perf_counter() - started


def recorded_missed(engine: sa.Engine, schema: str) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f'SELECT change_id FROM "{schema}".missed_changes'))
        return set(rows.scalars().all())


def drop(engine: sa.Engine, schema: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
