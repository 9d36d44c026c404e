"""Apply latency at a steady rate: from the source commit time to the target commit.

A producer process writes `bench/apply.py`'s kind of Debezium events (JSON with schemas,
PostgreSQL source, `--keys` keys over `--partitions` partitions) at a steady `--rate` for
`--seconds`, in ticks of 10 ms, stamping each event's `source.ts_ms` (and its envelope
`ts_ms`) with the wall clock at the moment it is handed to the Kafka client: the time a
Debezium connector would carry from the source commit. The time from the source commit
to that moment (Debezium reading the WAL) is not part of this measurement; everything
after it is: the Kafka client's linger, the broker, the service's poll and linger, decode,
map, the batch's transaction.

The real service (`apply.service.Service`, the pipeline and its worker thread) applies
them; its applier notes the wall clock when each batch's `write` returns (its transaction
committed) and each event's latency is that minus its `source.ts_ms`; the part of it up
to the batch's `prepare_batch` (consumed, decoded) is printed too. The service joins
its consumer group and applies one priming event before the steady stream starts, so the
join is not measured.

Prints the latency distribution, the achieved rate, peak RSS, and last
`RESULT latency rate=<n> p50_ms=<n> p99_ms=<n> max_ms=<n> events=<n>`.

    scripts/stack up && eval "$(scripts/stack env)"
    .venv/bin/python bench/latency.py --rate 5000 --seconds 60
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.apply_runs import KEY_SCHEMA, TABLE_DDL, VALUE_SCHEMA, settings_for  # noqa: E402
from cdc_recon.apply import native  # noqa: E402
from cdc_recon.apply.applier import Applier  # noqa: E402
from cdc_recon.apply.encode import PreparedBatch  # noqa: E402
from cdc_recon.apply.service import Service  # noqa: E402
from cdc_recon.control_schema import init_control_schema  # noqa: E402
from cdc_recon.kafka.consumer import GroupConsumer  # noqa: E402
from cdc_recon.kafka.producer import DeadLetterProducer  # noqa: E402
from cdc_recon.pg.engine import create_engine  # noqa: E402

TICK = 0.01  # seconds: the producer hands over rate * TICK events per tick


def event(i: int, key: int, now_ms: int) -> tuple[bytes, bytes]:
    payload = {
        "before": None,
        "after": {
            "id": key,
            "name": f"customer {key}",
            "email": f"c{key}@example.com",
            "balance": "AfE=",
            "updated_at": "2026-11-27T10:00:00.000000Z",
            "notes": f"change {i}",
        },
        "source": {
            "version": "3.6.1.Final",
            "connector": "postgresql",
            "name": "bench",
            "ts_ms": now_ms,
            "db": "source",
            "schema": "public",
            "table": "customers",
            "txId": 1000 + i,
            "lsn": 10_000_000 + i * 64,
        },
        "op": "u",
        "ts_ms": now_ms,
    }
    value = orjson.dumps({"schema": VALUE_SCHEMA, "payload": payload})
    return orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": key}}), value


def produce_steady(
    bootstrap: str, topic: str, rate: int, seconds: float, keys: int, partitions: int, first: int
) -> None:
    """`rate` events/s for `seconds`, each stamped when it is handed to the client."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    per_tick = max(1, round(rate * TICK))
    started = time.monotonic()
    i = first
    for tick in range(round(seconds / TICK)):
        pause = started + tick * TICK - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing a load generator, not waiting for a result
        now_ms = int(time.time() * 1000)
        for _ in range(per_tick):
            key = i % keys
            k, v = event(i, key, now_ms)
            producer.produce(topic, key=k, value=v, partition=key % partitions)
            i += 1
        producer.poll(0)
    if producer.flush(60) != 0:
        raise SystemExit("produce: not every event was delivered")
    late = time.monotonic() - started - seconds
    print(f"produced {i - first} events in {seconds + late:.1f} s", file=sys.stderr)


class StampingApplier(Applier):
    """Notes each committed event's latency: wall clock at `write`'s return minus its
    `source.ts_ms`; and its part up to the moment the service had consumed its batch
    (`prepare_batch` called, right after the poll and the decode)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.latencies: list[int] = []
        self.to_consumed: list[int] = []
        self.batches = 0
        self._consumed: dict[int, int] = {}

    def prepare_batch(self, items: Any) -> PreparedBatch:
        consumed_ms = int(time.time() * 1000)
        batch = super().prepare_batch(items)
        self._consumed[id(batch)] = consumed_ms
        return batch

    def write(self, batch: PreparedBatch, *args: Any, **kwargs: Any) -> Any:
        result = super().write(batch, *args, **kwargs)
        now_ms = int(time.time() * 1000)
        consumed_ms = self._consumed.pop(id(batch), now_ms)
        self.batches += 1
        sources = [c.decoded.event.source_ts_ms for c in batch.changes if c.decoded.event]
        self.latencies.extend(now_ms - source for source in sources)
        self.to_consumed.extend(consumed_ms - source for source in sources)
        return result


def wait_for(what: str, condition: Any, seconds: float, seen: Any) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"latency bench: {what} not within {seconds} s; saw {seen()}")
        time.sleep(0.01)


def percentile(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def measure(args: argparse.Namespace, bootstrap: str, url: str, topic: str, schema: str) -> None:
    settings = settings_for(bootstrap, url, schema, topic, f"latency-{schema}")
    if args.linger is not None:
        service_settings = settings.service.model_copy(update={"linger": args.linger})
        settings = settings.model_copy(update={"service": service_settings})
    engine = create_engine(url)
    init_control_schema(engine, schema)
    applier = StampingApplier(engine, settings)
    applier.prepare()
    producer = DeadLetterProducer(settings)
    service = Service(settings, applier, GroupConsumer(settings), producer)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    command = [sys.executable, __file__, "--produce", bootstrap, topic, "--rate", str(args.rate)]
    command += ["--keys", str(args.keys), "--partitions", str(args.partitions)]
    try:
        prime = command + ["--seconds", str(TICK), "--first", "0", "--rate", "100"]
        subprocess.run(prime, check=True)  # one event: the group is joined once it is applied
        wait_for("the priming event applied", lambda: applier.latencies, 120, lambda: "nothing")
        applier.latencies.clear()
        applier.to_consumed.clear()
        subprocess.run(command + ["--seconds", str(args.seconds), "--first", "1"], check=True)
        expected = round(args.seconds / TICK) * max(1, round(args.rate * TICK))
        wait_for(
            f"all {expected} events applied",
            lambda: len(applier.latencies) >= expected,
            120,
            lambda: f"{len(applier.latencies)} applied, service {service.stats.summary()}",
        )
    finally:
        service.stop()
        thread.join(60)
        producer.close()
        applier.close()
        engine.dispose()
    report(args, applier)


def report(args: argparse.Namespace, applier: StampingApplier) -> None:
    lat = applier.latencies
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    p50, p90, p99 = (percentile(lat, p) for p in (50, 90, 99))
    print(
        f"{len(lat)} events in {applier.batches} batches ({len(lat) / applier.batches:.0f} "
        f"per batch), {native.describe()} encoders, peak RSS {peak_mb:.0f} MB"
    )
    print(
        f"latency ms: p50 {p50}, p90 {p90}, p99 {p99}, max {max(lat)}, "
        f"mean {statistics.fmean(lat):.0f}"
    )
    part = applier.to_consumed
    print(
        f"of which up to the batch consumed and decoded (producer, broker, poll, linger): "
        f"p50 {percentile(part, 50)}, p99 {percentile(part, 99)}"
    )
    print(
        f"RESULT latency rate={args.rate} p50_ms={p50} p99_ms={p99} max_ms={max(lat)} "
        f"linger_s={applier.settings.service.linger:g} "
        f"events={len(lat)} peak_rss_mb={peak_mb:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=5000, help="events/s")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--linger", type=float, help="service.linger, seconds (default: its)")
    parser.add_argument(
        "--produce", nargs=2, metavar=("BOOTSTRAP", "TOPIC"), help=argparse.SUPPRESS
    )
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        bootstrap, topic = args.produce
        produce_steady(
            bootstrap, topic, args.rate, args.seconds, args.keys, args.partitions, args.first
        )
        return
    bootstrap = os.environ.get("CDC_RECON_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    url = os.environ.get("CDC_RECON_TARGET_URL", "postgresql://cdc_recon@127.0.0.1:15432/target")
    run_id = uuid.uuid4().hex[:8]
    topic, schema = f"bench.latency.{run_id}", f"bench_{run_id}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(sa.text(f'CREATE TABLE "{schema}".customers {TABLE_DDL}'))
    try:
        measure(args, bootstrap, url, topic, schema)
    finally:
        admin.delete_topics([topic, f"{topic}.dlq"])
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


if __name__ == "__main__":
    main()
