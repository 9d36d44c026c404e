"""How long `cdc-recon trace` takes on a ledger of 20 M rows, and what its index costs.

In one run:

1. a control schema whose ledger holds `--rows` rows over one week, 50 000 keys
   (`bench/ledger_growth.py`'s fill: ~400 ledger rows per key), vacuumed and analysed;
   it is kept between runs (`--reuse`) since filling takes minutes;
2. interleaved, `--repeats` rounds of `--traces` traces of random keys over the whole
   week (`trace.reader.read_trace`: every query of the trace, the source included),
   against two baselines measured in the same rounds: a primary-key lookup of the
   key's `key_state` row (the cheapest read there is), and the ledger rows of the key
   in one hour of source time without the key index (what a trace would cost without
   it: the BRIN on source time narrows the scan to the hour, the key is a filter);
3. the index's price: INSERT ... SELECT of `--insert-rows` ledger rows into an empty
   ledger with the `ledger_key` index and without it, interleaved.

Last line: `RESULT trace rows=<n> trace_ms=<median> vs_point_lookup=<x>
vs_unindexed_hour=<x> insert_cost=<x> traces_per_s=<n> peak_rss_mb=<n>`; ratios are
medians over rounds, with the spread printed above.

    scripts/stack up && eval "$(scripts/stack env)"
    .venv/bin/python bench/trace.py --rows 20000000 --reuse
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ledger_growth import FIRST_MS, WEEK_MS, fill  # noqa: E402
from cdc_recon.config import load_settings  # noqa: E402
from cdc_recon.control_schema import init_control_schema  # noqa: E402
from cdc_recon.pg.engine import create_engine  # noqa: E402
from cdc_recon.trace.queries import LEDGER_KEY_INDEX  # noqa: E402
from cdc_recon.trace.reader import TraceRequest, find_mapping, read_trace  # noqa: E402

KEYS = 50_000  # the fill's keys
START = dt.datetime.fromtimestamp((FIRST_MS - WEEK_MS) / 1000, dt.UTC)
END = dt.datetime.fromtimestamp(FIRST_MS / 1000, dt.UTC) + dt.timedelta(hours=1)


def ledger_count(engine: sa.Engine, schema: str) -> int:
    with engine.connect() as conn:
        if not conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f"{schema}.ledger"}).scalar():
            return 0
        return int(conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".ledger')).scalar() or 0)


def prepare(engine: sa.Engine, schema: str, rows: int, reuse: bool) -> None:
    if reuse and ledger_count(engine, schema) == rows:
        print(f"reusing {schema}: {rows} ledger rows", flush=True)
        return
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    init_control_schema(engine, schema)
    with engine.begin() as conn:  # the mapped target table the trace reads the row of
        conn.execute(sa.text(f'CREATE TABLE "{schema}".customers (id int PRIMARY KEY, name text)'))
    print(f"filling {rows} ledger rows into {schema}", flush=True)
    seconds = fill(engine, schema, rows)
    print(f"filled in {seconds:.0f} s", flush=True)
    with engine.begin() as conn:  # every key has a key_state row, as in a live ledger
        conn.execute(
            sa.text(
                f'INSERT INTO "{schema}".key_state (target_table, key_text, position, deleted) '
                f"SELECT '{schema}.customers', '[\"' || i || '\"]', ARRAY[i], false "
                "FROM generate_series(0, :n - 1) i ON CONFLICT DO NOTHING"
            ),
            {"n": KEYS},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'VACUUM ANALYZE "{schema}".ledger, "{schema}".key_state'))


def timed(action: Callable[[], object], times: int) -> float:
    """Median milliseconds of `times` calls."""
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def insert_ms(engine: sa.Engine, schema: str, rows: int) -> float:
    """Milliseconds to insert `rows` ledger rows into the (emptied) ledger of `schema`."""
    with engine.begin() as conn:
        conn.execute(sa.text(f'TRUNCATE "{schema}".ledger'))
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f'INSERT INTO "{schema}".ledger (change_id, source_table, target_table, '
                "key_text, op, position, tx, source_ts_ms, source_ts, topic, kafka_partition, "
                "kafka_offset, outcome) SELECT 'public.customers:[\"' || (i % 50000) || "
                "'\"]:' || i, 'public.customers', 'x.customers', '[\"' || (i % 50000) || '\"]', "
                "'u', ARRAY[i], i::text, :ms, now(), 't', 0, i, 'applied' "
                "FROM generate_series(1, :n) i"
            ),
            {"n": rows, "ms": int(time.time() * 1000)},
        )
    return (time.perf_counter() - started) * 1000


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--traces", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--insert-rows", type=int, default=200_000)
    parser.add_argument("--reuse", action="store_true", help="keep a filled schema")
    args = parser.parse_args()
    settings0 = load_settings(None)
    target = create_engine(settings0.target_url, name="target")
    source = create_engine(settings0.source_url, name="source") if settings0.source_url else None
    schema = f"bench_trace_{args.rows}"
    prepare(target, schema, args.rows, args.reuse)
    settings = load_settings(
        None,
        control_schema=schema,
        tables=[{"source": "public.customers", "target": f"{schema}.customers", "key": ["id"]}],
    )
    mapping = find_mapping(settings, "public.customers")
    rng = random.Random(7)

    def one_trace() -> None:
        key = str(rng.randrange(KEYS))
        found = read_trace(target, source, settings, TraceRequest(mapping, (key,), START, END))
        assert len(found.changes) == args.rows // KEYS, (key, len(found.changes))

    def point_lookup() -> None:
        with target.connect() as conn:
            conn.execute(
                sa.text(
                    f'SELECT * FROM "{schema}".key_state WHERE target_table = :t AND key_text = :k'
                ),
                {"t": f"{schema}.customers", "k": f'["{rng.randrange(KEYS)}"]'},
            ).all()

    hour = END - dt.timedelta(hours=1) - dt.timedelta(days=3)

    def unindexed_hour() -> None:
        # `|| ''` keeps the key index out of the plan (an expression it does not index):
        # the BRIN on source time finds the hour's blocks, the key is a filter.
        with target.connect() as conn:
            conn.execute(
                sa.text(
                    f"SELECT * FROM \"{schema}\".ledger WHERE source_table || '' = :t "
                    "AND key_text || '' = :k AND source_ts >= :a AND source_ts < :b"
                ),
                {
                    "t": "public.customers",
                    "k": f'["{rng.randrange(KEYS)}"]',
                    "a": hour,
                    "b": hour + dt.timedelta(hours=1),
                },
            ).all()

    with_index, without_index = f"{schema}_ins_a", f"{schema}_ins_b"
    for name in (with_index, without_index):
        with target.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        init_control_schema(target, name)
    with target.begin() as conn:
        conn.execute(sa.text(f'DROP INDEX "{without_index}".{LEDGER_KEY_INDEX}'))

    traces, lookups, scans, ins_a, ins_b = [], [], [], [], []
    started = time.perf_counter()
    traced = 0
    for round_no in range(args.repeats):
        traces.append(timed(one_trace, args.traces))
        traced += args.traces
        lookups.append(timed(point_lookup, args.traces))
        scans.append(timed(unindexed_hour, max(3, args.traces // 4)))
        first, second = (with_index, without_index) if round_no % 2 else (without_index, with_index)
        for name in (first, second):
            (ins_a if name == with_index else ins_b).append(
                insert_ms(target, name, args.insert_rows)
            )
        print(
            f"round {round_no + 1}: trace {traces[-1]:.1f} ms, point lookup {lookups[-1]:.2f} ms, "
            f"unindexed hour {scans[-1]:.1f} ms, insert {ins_a[-1]:.0f} / {ins_b[-1]:.0f} ms",
            flush=True,
        )
    elapsed = time.perf_counter() - started
    vs_lookup = [t / p for t, p in zip(traces, lookups, strict=True)]
    vs_scan = [t / s for t, s in zip(traces, scans, strict=True)]
    cost = [a / b for a, b in zip(ins_a, ins_b, strict=True)]
    print(f"trace ms: {spread(traces)}")
    print(f"trace / point lookup: {spread(vs_lookup)}")
    print(f"trace / unindexed hour: {spread(vs_scan)}")
    print(f"insert with / without the key index: {spread(cost)}")
    for name in (with_index, without_index):
        with target.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"RESULT trace rows={args.rows} trace_ms={statistics.median(traces):.1f} "
        f"vs_point_lookup={statistics.median(vs_lookup):.1f} "
        f"vs_unindexed_hour={statistics.median(vs_scan):.3f} "
        f"insert_cost={statistics.median(cost):.2f} "
        f"traces_per_s={traced / sum(t * args.traces / 1000 for t in traces) * 1:.1f} "
        f"wall_s={elapsed:.0f} peak_rss_mb={rss_mb:.0f}"
    )


if __name__ == "__main__":
    main()
