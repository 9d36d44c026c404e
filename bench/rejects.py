"""What rows the target rejects cost a batch: a clean batch against one with rejections.

Applies batches of `--rows` new orders through the service's applier (map, collapse,
encode, one target transaction with rows, ledger and offsets) to a target table with a
CHECK constraint, in the same run and interleaved, `--repeats` times each:

1. **clean**: every row passes the constraint (the baseline);
2. **rejected=N** for each N of `--rejected`: N rows scattered through the batch break
   the constraint, which only the target knows, so Python cannot refuse them first: the
   set-based write fails, and the batch is written again row by row in one statement
   per table (`cdc_recon.apply.isolate`). Every rejected row must come back as a failure.

Before issue 13 the rejected rows were isolated by bisection: 300 of 2,000 cost 292 s.
Prints medians with their spread, then, last, the line
`RESULT rejects rows=<n> rejected=<n> clean_ms=<x> isolating_ms=<x> ratio=<x>
events_per_s=<n> peak_rss_mb=<n>` for the largest N (events/s of that batch).

    scripts/stack up && eval "$(scripts/stack env)"
    .venv/bin/python bench/rejects.py --rows 2000 --rejected 30,300,1000
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import uuid
from decimal import Decimal
from itertools import count
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdc_recon.apply.applier import Applier  # noqa: E402
from cdc_recon.batch import Decoded, Message  # noqa: E402
from cdc_recon.config import load_settings  # noqa: E402
from cdc_recon.control_schema import init_control_schema  # noqa: E402
from cdc_recon.events import ChangeEvent, Op, SourcePosition  # noqa: E402
from cdc_recon.pg.engine import create_engine  # noqa: E402

TS_MS = 1_700_000_000_000


def batch(ids: range, rejected: int, positions: count[int]) -> list[Decoded]:
    """New orders for `ids`; `rejected` of them, spread evenly, with a negative amount."""
    step = len(ids) // rejected if rejected else 0
    items = []
    for n, id_ in enumerate(ids):
        bad = bool(step) and n % step == step // 2 and n // step < rejected
        lsn = next(positions)
        after = {"id": id_, "status": "new", "amount": Decimal(-1 if bad else n), "note": "x"}
        event = ChangeEvent(
            "public.orders", Op.CREATE, {"id": id_}, after, SourcePosition((lsn,)), TS_MS, str(lsn)
        )
        items.append(Decoded(Message("bench", 0, lsn, b"k", b"v"), event))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rejected", default="30,300,1000", help="comma-separated counts")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    counts = [int(n) for n in args.rejected.split(",")]
    url = os.environ.get("CDC_RECON_TARGET_URL")
    if not url:
        sys.exit('set CDC_RECON_TARGET_URL (eval "$(scripts/stack env)")')
    schema = f"bench_rejects_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url, name="target")
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        conn.exec_driver_sql(
            f'CREATE TABLE "{schema}".orders (id bigint PRIMARY KEY, status text, '
            "amount numeric(12,2) CHECK (amount >= 0), note text)"
        )
    table = {"source": "public.orders", "target": f"{schema}.orders", "key": ["id"]}
    settings = load_settings(target_url=url, control_schema=schema, tables=[table])
    init_control_schema(engine, schema)
    applier = Applier(engine, settings)
    applier.prepare()
    positions, ids = count(100), count(0, args.rows)
    timings: dict[int, list[float]] = {n: [] for n in [0, *counts]}
    try:
        applier.apply(batch(range(next(ids), 0), 0, positions), {}, "warm")  # connection, stages
        for repeat in range(args.repeats):
            for n in [0, *counts]:  # interleaved: a drift of the machine hits every variant
                start = next(ids)
                items = batch(range(start, start + args.rows), n, positions)
                began = time.perf_counter()
                result = applier.apply(items, {("bench", 0): start}, "bench")
                timings[n].append(time.perf_counter() - began)
                assert len(result.failures) == n, (n, len(result.failures))
                assert result.applied == args.rows - n, (n, result.applied)
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    finally:
        applier.close()
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()
    clean = statistics.median(timings[0])
    print(f"{'batch':>14} {'median ms':>10} {'min-max ms':>16} {'x clean':>8}")
    for n, seconds in timings.items():
        median = statistics.median(seconds)
        label = "clean" if n == 0 else f"rejected={n}"
        spread = f"{min(seconds) * 1e3:.1f}-{max(seconds) * 1e3:.1f}"
        print(f"{label:>14} {median * 1e3:>10.1f} {spread:>16} {median / clean:>8.2f}")
    worst = max(counts)
    isolating = statistics.median(timings[worst])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"RESULT rejects rows={args.rows} rejected={worst} clean_ms={clean * 1e3:.1f} "
        f"isolating_ms={isolating * 1e3:.1f} ratio={isolating / clean:.2f} "
        f"events_per_s={args.rows / isolating:.0f} peak_rss_mb={peak_mb:.0f}"
    )


if __name__ == "__main__":
    main()
