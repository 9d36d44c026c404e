"""End-to-end apply throughput: Kafka → cdc_recon → target, against two baselines.

Writes N Debezium-shaped JSON events (JsonConverter with schemas, PostgreSQL source) for
K keys into a fresh topic, then, on the same events and in the same run:

1. **ours**: the consumer-group service (decode, guarded upserts, ledger, offsets in one
   transaction per batch, Kafka commit after), with the Rust COPY text encoders when they
   are installed (`CDC_RECON_NATIVE=0`: the Python ones; the line says which);
2. **per-event**: the same applier with one transaction per event (the naive design),
   on the first `--per-event` events;
3. **raw COPY**: consume and decode the same events, keep the last row per key, COPY the
   final rows into a bare table: no ledger, no guards, no offsets (the floor). Timed
   from its first message, as run 1 is from its first batch: joining a consumer group
   takes 0-3 s that neither run should count. It fetches with the service's prefetch
   settings (`kafka.consumer.PREFETCH`): librdkafka's defaults pause fetching for 1 s
   whenever the local queue fills, which made this floor swing between 61k and 97k.

Prints the figures and, last, the line
`RESULT apply events_per_s=<n> vs_per_event=<x> vs_raw_copy=<x> peak_rss_mb=<n>`.
Peak RSS is the benchmark process's after run 1 (events are produced by a subprocess).

    scripts/stack up && eval "$(scripts/stack env)"
    .venv/bin/python bench/apply.py --events 200000 --keys 50000
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdc_recon.apply import native  # noqa: E402
from cdc_recon.apply.applier import Applier  # noqa: E402
from cdc_recon.apply.service import Service  # noqa: E402
from cdc_recon.batch import Message  # noqa: E402
from cdc_recon.codecs.messages import decode_batch, decode_message  # noqa: E402
from cdc_recon.config import ServiceSettings, Settings, load_settings  # noqa: E402
from cdc_recon.control_schema import init_control_schema  # noqa: E402
from cdc_recon.kafka.consumer import PREFETCH, GroupConsumer  # noqa: E402
from cdc_recon.kafka.producer import DeadLetterProducer  # noqa: E402
from cdc_recon.pg.engine import create_engine  # noqa: E402

COLUMNS = ("id", "name", "email", "balance", "updated_at", "notes")
TABLE_DDL = (
    "(id int PRIMARY KEY, name text, email text, balance numeric(12,2), "
    "updated_at timestamptz, notes text)"
)
VALUE_SCHEMA = {
    "type": "struct",
    "name": "bench.public.customers.Envelope",
    "fields": [
        {
            "type": "struct",
            "field": "after",
            "optional": True,
            "fields": [
                {"type": "int32", "field": "id"},
                {"type": "string", "field": "name", "optional": True},
                {"type": "string", "field": "email", "optional": True},
                {
                    "type": "bytes",
                    "field": "balance",
                    "optional": True,
                    "name": "org.apache.kafka.connect.data.Decimal",
                    "parameters": {"scale": "2"},
                },
                {
                    "type": "string",
                    "field": "updated_at",
                    "optional": True,
                    "name": "io.debezium.time.ZonedTimestamp",
                },
                {"type": "string", "field": "notes", "optional": True},
            ],
        },
        {"type": "struct", "field": "source", "fields": []},
        {"type": "string", "field": "op"},
        {"type": "int64", "field": "ts_ms", "optional": True},
    ],
}
KEY_SCHEMA = {"type": "struct", "fields": [{"type": "int32", "field": "id"}]}


def produce(bootstrap: str, topic: str, events: int, keys: int, partitions: int) -> None:
    """Write the events (run in a subprocess so the measured process stays small)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1 << 20})
    balance = "AfE="  # 5.05 as base64 of the unscaled big-endian value 505
    for i in range(events):
        key = i % keys
        payload = {
            "before": None,
            "after": {
                "id": key,
                "name": f"customer {key}",
                "email": f"c{key}@example.com",
                "balance": balance,
                "updated_at": "2026-11-27T10:00:00.000000Z",
                "notes": f"change {i}",
            },
            "source": {
                "version": "3.6.1.Final",
                "connector": "postgresql",
                "name": "bench",
                "ts_ms": 1_790_000_000_000 + i,
                "db": "source",
                "schema": "public",
                "table": "customers",
                "txId": 1000 + i,
                "lsn": 10_000_000 + i * 64,
            },
            "op": "c" if i < keys else "u",
            "ts_ms": 1_790_000_000_000 + i,
        }
        value = orjson.dumps({"schema": VALUE_SCHEMA, "payload": payload})
        kbytes = orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": key}})
        while True:
            try:
                producer.produce(topic, key=kbytes, value=value, partition=key % partitions)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise SystemExit("produce: not every event was delivered")


def settings_for(bootstrap: str, url: str, schema: str, topic: str, group: str) -> Settings:
    return load_settings(
        kafka_bootstrap=bootstrap,
        target_url=url,
        topics=[topic],
        group_id=group,
        control_schema=schema,
        dead_letter_topic=f"{topic}.dlq",
        tables=[{"source": "public.customers", "target": f"{schema}.customers", "key": ["id"]}],
    )


def run_ours(settings: Settings, engine: sa.Engine, events: int) -> float:
    """Events/s of the real service, from its first batch to the last event applied."""
    applier = Applier(engine, settings)
    applier.prepare()
    producer = DeadLetterProducer(settings)
    service = Service(settings, applier, GroupConsumer(settings), producer)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    first_at, first_count = 0.0, 0
    deadline = time.monotonic() + 900
    while service.stats.messages < events and time.monotonic() < deadline:
        if not first_at and service.stats.messages:
            first_at, first_count = time.monotonic(), service.stats.messages
        time.sleep(0.005)
    done_at = time.monotonic()
    service.stop()
    thread.join(60)
    producer.close()
    applier.close()
    if service.stats.messages < events:
        raise SystemExit(f"ours: only {service.stats.messages} of {events} events in 900 s")
    print(f"ours: {service.stats.summary()}")
    return (events - first_count) / (done_at - first_at)


def consume_all(settings: Settings, count: int) -> tuple[list[Message], float]:
    """`count` messages from the start of the topics, and when the first one arrived (the
    consumer group's join before it is not part of any measurement, as in run 1)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"{settings.group_id}-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **PREFETCH,  # as the service's consumer: the default stalls fetching for 1 s
        }
    )
    consumer.subscribe(list(settings.topics))
    out: list[Message] = []
    first_at = 0.0
    deadline = time.monotonic() + 600
    while len(out) < count and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=min(10000, count - len(out)), timeout=1.0):
            if m.error() is None:
                first_at = first_at or time.monotonic()
                out.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value()))
    consumer.close()
    return out, first_at


def run_per_event(settings: Settings, engine: sa.Engine, count: int) -> float:
    """Events/s of the same applier with one transaction per event."""
    messages, _ = consume_all(settings, count)
    applier = Applier(engine, settings)
    applier.prepare()
    started = time.monotonic()
    for message in messages:
        item = decode_message(message, settings.format, None)
        applier.apply([item], {(message.topic, message.partition): message.offset + 1}, "pe")
    elapsed = time.monotonic() - started
    applier.close()
    return count / elapsed


def run_raw_copy(settings: Settings, engine: sa.Engine, events: int, schema: str) -> float:
    """Events/s of consume + decode + COPY of the final rows: no ledger, no guard."""
    messages, started = consume_all(settings, events)
    final: dict[Any, Any] = {}
    for item in decode_batch(messages, settings.format, None):
        event = getattr(item, "event", None)
        if event is not None and event.after is not None:
            final[event.key["id"]] = event.after
    lines = []
    for row in final.values():
        values = [row.get(c) for c in COLUMNS]
        lines.append("\t".join("\\N" if v is None else str(v) for v in values))
    raw = engine.raw_connection()
    cur = raw.cursor()
    cur.copy_expert(
        f'COPY "{schema}".raw_customers ({", ".join(COLUMNS)}) FROM STDIN',
        io.StringIO("\n".join(lines) + "\n"),
    )
    raw.commit()
    raw.close()
    return events / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--per-event", type=int, default=5_000)
    parser.add_argument(
        "--batch-size", type=int, default=ServiceSettings().batch_size, help="service.batch_size"
    )
    parser.add_argument(
        "--produce", nargs=2, metavar=("BOOTSTRAP", "TOPIC"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.produce:
        produce(args.produce[0], args.produce[1], args.events, args.keys, args.partitions)
        return

    bootstrap = os.environ.get("CDC_RECON_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    url = os.environ.get("CDC_RECON_TARGET_URL", "postgresql://cdc_recon@127.0.0.1:15432/target")
    run_id = uuid.uuid4().hex[:8]
    topic, schema = f"bench.apply.{run_id}", f"bench_{run_id}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(sa.text(f'CREATE TABLE "{schema}".customers {TABLE_DDL}'))
        conn.execute(sa.text(f'CREATE TABLE "{schema}".raw_customers {TABLE_DDL}'))
    settings = settings_for(bootstrap, url, schema, topic, f"bench-{run_id}")
    settings = settings.model_copy(
        update={"service": settings.service.model_copy(update={"batch_size": args.batch_size})}
    )
    init_control_schema(engine, schema)
    try:
        print(f"producing {args.events} events for {args.keys} keys into {topic} ...")
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--events",
                str(args.events),
                "--keys",
                str(args.keys),
                "--partitions",
                str(args.partitions),
                "--produce",
                bootstrap,
                topic,
            ],
            check=True,
        )
        ours = run_ours(settings, engine, args.events)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        encoders = native.describe()
        print(f"ours:      {ours:10.0f} events/s (peak RSS {peak_mb:.0f} MB, {encoders} encoders)")
        per_event_settings = settings.model_copy(update={"control_schema": schema})
        with engine.begin() as conn:  # a clean target for the per-event baseline
            conn.execute(
                sa.text(f'TRUNCATE "{schema}".customers, "{schema}".ledger, "{schema}".key_state')
            )
        per_event = run_per_event(per_event_settings, engine, min(args.per_event, args.events))
        print(f"per-event: {per_event:10.0f} events/s (first {args.per_event} events)")
        raw = run_raw_copy(settings, engine, args.events, schema)
        print(f"raw COPY:  {raw:10.0f} events/s")
        print(
            f"RESULT apply events_per_s={ours:.0f} vs_per_event={ours / per_event:.2f} "
            f"vs_raw_copy={ours / raw:.2f} peak_rss_mb={peak_mb:.0f}"
        )
    finally:
        admin.delete_topics([topic, f"{topic}.dlq"])
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


if __name__ == "__main__":
    main()
