"""Apply throughput with a ledger of 20 M rows against an empty one, and what a drop costs.

In one run, on the same Debezium-shaped events (`bench/apply.py`'s, source times of one
day of 2026-09):

1. **empty**: the service applies them into a fresh control schema;
2. **full**: the same, into a control schema whose ledger already holds `--rows` rows
   (filled with SQL, INSERT ... SELECT generate_series, spread evenly over the week up to
   the events' first source time, so the partition they go into holds its share too),
   vacuumed and analysed before it is measured;

   the two alternate `--repeats` times (the machine is shared: medians, and the spread);
3. **drop**: while the service applies the events into the full ledger once more, the
   ledger's maintenance (`apply.ledger.maintain_ledger`) drops every expired partition
   the sweeper has passed (the week of filled rows; a sweeper watermark is stored at the
   events' first source time). Every batch write is timed: `drop_block_ms` is the
   longest write that overlapped the drop, the typical write's time included.

Last line: `RESULT ledger_growth rows=<n> vs_empty=<x> drop_block_ms=<n>`, vs_empty the
median events/s into the full ledger over the median into the empty one.

    scripts/stack up && eval "$(scripts/stack env)"
    .venv/bin/python bench/ledger_growth.py --rows 20000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.apply import TABLE_DDL, settings_for  # noqa: E402
from cdc_recon.apply.applier import Applier  # noqa: E402
from cdc_recon.apply.ledger import ensure_partitions, maintain_ledger  # noqa: E402
from cdc_recon.apply.ledger_plan import Granularity, buckets_of  # noqa: E402
from cdc_recon.apply.service import Service  # noqa: E402
from cdc_recon.config import Settings  # noqa: E402
from cdc_recon.control_schema import init_control_schema  # noqa: E402
from cdc_recon.kafka.consumer import GroupConsumer  # noqa: E402
from cdc_recon.kafka.producer import DeadLetterProducer  # noqa: E402
from cdc_recon.pg.engine import create_engine  # noqa: E402

FIRST_MS = 1_790_000_000_000  # bench/apply.py's first source time (2026-09-21 13:33 UTC)
WEEK_MS = 7 * 86_400_000


class TimedApplier(Applier):
    """Records (start, end) of every batch write."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[tuple[float, float]] = []

    def write(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return super().write(*args, **kwargs)
        finally:
            self.writes.append((started, time.monotonic()))


def fill(engine: sa.Engine, schema: str, rows: int) -> float:
    """`rows` ledger rows over the week before FIRST_MS, by SQL; seconds it took."""
    started = time.monotonic()
    day = Granularity.of("day")
    raw = engine.raw_connection()
    try:
        ensure_partitions(
            raw,
            schema,
            buckets_of(range(FIRST_MS - WEEK_MS, FIRST_MS + 1, 3_600_000), day),
            lock_timeout=5,
        )
    finally:
        raw.close()
    step = WEEK_MS // rows
    chunk = 2_000_000
    for low in range(0, rows, chunk):
        high = min(low + chunk, rows)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f'INSERT INTO "{schema}".ledger (change_id, source_table, target_table, '
                    "key_text, op, position, tx, source_ts_ms, source_ts, topic, "
                    "kafka_partition, kafka_offset, outcome) SELECT "
                    "'public.customers:[\"' || (i % 50000) || '\"]:' || i, 'public.customers', "
                    f"'{schema}.customers', '[\"' || (i % 50000) || '\"]', 'u', ARRAY[i], "
                    "i::text, t, to_timestamp(t / 1000) + mod(t, 1000) * interval '1 ms', "
                    "'filled', 0, i, 'applied' FROM generate_series(:low, :high - 1) i, "
                    "LATERAL (SELECT :first - :week + i * :step AS t) x"
                ),
                {"low": low, "high": high, "first": FIRST_MS, "week": WEEK_MS, "step": step},
            )
        print(f"  filled {high} rows ({time.monotonic() - started:.0f} s)", flush=True)
    return time.monotonic() - started


def vacuum(engine: sa.Engine, schema: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'VACUUM ANALYZE "{schema}".ledger, "{schema}".key_state'))
        conn.execute(sa.text(f'VACUUM ANALYZE "{schema}".customers'))


def reset(engine: sa.Engine, schema: str, topic: str) -> None:
    """Back to before a run: the events' rows, key states and ledger rows gone."""
    with engine.begin() as conn:
        conn.execute(sa.text(f'TRUNCATE "{schema}".customers, "{schema}".key_state'))
        conn.execute(sa.text(f'TRUNCATE "{schema}".offsets'))
        conn.execute(sa.text(f'DELETE FROM "{schema}".ledger WHERE topic = :t'), {"t": topic})
    vacuum(engine, schema)


def run_service(
    settings: Settings, engine: sa.Engine, events: int, during: Callable[[], None] | None = None
) -> tuple[float, TimedApplier]:
    """Events/s from the first batch to the last event; `during` runs once batches flow."""
    applier = TimedApplier(engine, settings)
    applier.prepare()
    producer = DeadLetterProducer(settings)
    service = Service(settings, applier, GroupConsumer(settings), producer)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    first_at, first_count, side = 0.0, 0, None
    deadline = time.monotonic() + 900
    while service.stats.messages < events and time.monotonic() < deadline:
        if not first_at and service.stats.messages:
            first_at, first_count = time.monotonic(), service.stats.messages
        if during is not None and side is None and service.stats.messages > events // 5:
            side = threading.Thread(target=during)
            side.start()
        time.sleep(0.005)
    done_at = time.monotonic()
    service.stop()
    thread.join(60)
    if side is not None:
        side.join(300)
    producer.close()
    applier.close()
    if service.stats.messages < events:
        raise SystemExit(f"only {service.stats.messages} of {events} events in 900 s")
    return (events - first_count) / (done_at - first_at), applier


def measure_drop(
    settings: Settings, engine: sa.Engine, events: int, schema: str
) -> tuple[float, float, list[str]]:
    """The longest batch write overlapping the drop, the median write (ms), the dropped."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f'INSERT INTO "{schema}".sweeper_watermark (pipeline, adapter, swept_until) '
                "VALUES ('bench', 'pg_trigger', to_timestamp(:at / 1000.0))"
            ),
            {"at": FIRST_MS},
        )
    window: list[float] = []
    dropped: list[str] = []

    def drop() -> None:
        window.append(time.monotonic())
        done = maintain_ledger(engine, settings, dt.datetime.now(dt.UTC))
        window.append(time.monotonic())
        dropped.extend(done.dropped)
        print(f"  maintenance: {done.summary()} in {window[1] - window[0]:.2f} s", flush=True)

    _, applier = run_service(settings, engine, events, during=drop)
    start, end = window
    overlapping = [b - a for a, b in applier.writes if a < end and b > start]
    median = statistics.median(b - a for a, b in applier.writes)
    return max(overlapping, default=0.0) * 1000, median * 1000, dropped


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.0f}, min {min(values):.0f}, max {max(values):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    bootstrap = os.environ.get("CDC_RECON_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    url = os.environ.get("CDC_RECON_TARGET_URL", "postgresql://cdc_recon@127.0.0.1:15432/target")
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench.ledger.{run_id}"
    schemas = {"empty": f"bench_empty_{run_id}", "full": f"bench_full_{run_id}"}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
    engine = create_engine(url)
    try:
        for schema in schemas.values():
            with engine.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
                conn.execute(sa.text(f'CREATE TABLE "{schema}".customers {TABLE_DDL}'))
            init_control_schema(engine, schema)
        print(f"producing {args.events} events for {args.keys} keys into {topic} ...", flush=True)
        produce = [sys.executable, str(ROOT / "bench/apply.py"), "--events", str(args.events)]
        produce += ["--keys", str(args.keys), "--partitions", str(args.partitions)]
        subprocess.run([*produce, "--produce", bootstrap, topic], check=True)
        print(f"filling the full ledger with {args.rows} rows ...", flush=True)
        filled = fill(engine, schemas["full"], args.rows)
        vacuum(engine, schemas["full"])
        print(f"  {args.rows} rows in {filled:.0f} s, vacuumed", flush=True)

        rates: dict[str, list[float]] = {"empty": [], "full": []}
        for repeat in range(args.repeats):
            for kind, schema in schemas.items():
                reset(engine, schema, topic)
                settings = settings_for(bootstrap, url, schema, topic, f"b-{run_id}-{kind}{repeat}")
                rate, _ = run_service(settings, engine, args.events)
                rates[kind].append(rate)
                print(f"  {kind:5s} #{repeat + 1}: {rate:8.0f} events/s", flush=True)
        for kind, values in rates.items():
            print(f"{kind}: events/s {spread(values)}")
        vs_empty = statistics.median(rates["full"]) / statistics.median(rates["empty"])

        reset(engine, schemas["full"], topic)
        settings = settings_for(bootstrap, url, schemas["full"], topic, f"b-{run_id}-drop")
        longest, median, dropped = measure_drop(settings, engine, args.events, schemas["full"])
        print(f"drop: {len(dropped)} partitions ({', '.join(dropped)}) while applying")
        print(
            f"drop: longest overlapping batch write {longest:.0f} ms (median write {median:.0f} ms)"
        )
        print(
            f"RESULT ledger_growth rows={args.rows} vs_empty={vs_empty:.2f} "
            f"drop_block_ms={longest:.0f}"
        )
    finally:
        admin.delete_topics([topic, f"{topic}.dlq"])
        for schema in schemas.values():
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


if __name__ == "__main__":
    main()
