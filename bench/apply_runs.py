"""The runs `bench/apply.py` times, each in a process of its own, and the events it writes.

`python bench/apply_runs.py ours|per-event|raw-copy --topic T --schema S --group G
--events N` runs one of them on the events already in topic T and prints one JSON line,
`{"events_per_s": ..., "peak_rss_mb": ..., "cpu_s_per_event": ...}` (this process's CPU,
over the timed span for ours, over the whole run, consuming included, for the others).
A process per run keeps one run's memory (the raw COPY holds every message) and warm
caches out of the next, and makes the peak RSS of cdc_recon's run its own. `produce`
writes the events (`bench/apply.py --produce`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdc_recon.apply.applier import Applier  # noqa: E402
from cdc_recon.apply.service import Service  # noqa: E402
from cdc_recon.batch import Message  # noqa: E402
from cdc_recon.codecs.messages import decode_batch, decode_message  # noqa: E402
from cdc_recon.config import Settings, load_settings  # noqa: E402
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


def send(bootstrap: str, topic: str, messages: Iterable[tuple[bytes, bytes | None]]) -> int:
    """Writes (key, value) messages in order into partition 0 of `topic`."""
    producer = Producer({"bootstrap.servers": bootstrap})
    count = 0
    for key, value in messages:
        producer.produce(topic, key=key, value=value, partition=0)
        count += 1
    if producer.flush(60) != 0:
        raise SystemExit(f"send: not every message reached {topic}")
    return count


def settings_for(
    bootstrap: str, url: str, schema: str, topic: str, group: str, table: str = "customers"
) -> Settings:
    return load_settings(
        kafka_bootstrap=bootstrap,
        target_url=url,
        topics=[topic],
        group_id=group,
        control_schema=schema,
        dead_letter_topic=f"{topic}.dlq",
        tables=[{"source": f"public.{table}", "target": f"{schema}.{table}", "key": ["id"]}],
    )


def cpu_seconds() -> float:
    """User and system CPU of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_ours(settings: Settings, engine: sa.Engine, events: int) -> float:
    """Events/s of the real service, from its first batch to the last event applied."""
    return run_ours_timed(settings, engine, events)[0]


def run_ours_timed(settings: Settings, engine: sa.Engine, events: int) -> tuple[float, float]:
    """`run_ours`'s events/s, and this process's CPU seconds per event over the same span."""
    applier = Applier(engine, settings)
    applier.prepare()
    producer = DeadLetterProducer(settings)
    service = Service(settings, applier, GroupConsumer(settings), producer)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    first_at, first_count, first_cpu = 0.0, 0, 0.0
    deadline = time.monotonic() + 900
    while service.stats.messages < events and time.monotonic() < deadline:
        if not first_at and service.stats.messages:
            first_at, first_count = time.monotonic(), service.stats.messages
            first_cpu = cpu_seconds()
        time.sleep(0.005)
    done_at, done_cpu = time.monotonic(), cpu_seconds()
    service.stop()
    thread.join(60)
    producer.close()
    applier.close()
    if service.stats.messages < events:
        raise SystemExit(f"ours: only {service.stats.messages} of {events} events in 900 s")
    print(f"ours: {service.stats.summary()}", file=sys.stderr)
    counted = events - first_count
    return counted / (done_at - first_at), (done_cpu - first_cpu) / counted


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


def child(argv: list[str]) -> None:
    """One run in this process; prints its figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="bench/apply_runs.py")
    parser.add_argument("kind", choices=["ours", "per-event", "raw-copy"])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    args = parser.parse_args(argv)
    bootstrap = os.environ["CDC_RECON_KAFKA_BOOTSTRAP"]
    url = os.environ["CDC_RECON_TARGET_URL"]
    settings = settings_for(bootstrap, url, args.schema, args.topic, args.group)
    service = settings.service.model_copy(update={"batch_size": args.batch_size})
    settings = settings.model_copy(update={"service": service})
    engine = create_engine(url)
    started_cpu = cpu_seconds()
    try:
        if args.kind == "ours":
            rate, cpu = run_ours_timed(settings, engine, args.events)
        elif args.kind == "per-event":
            rate = run_per_event(settings, engine, args.events)
        else:
            rate = run_raw_copy(settings, engine, args.events, args.schema)
        if args.kind != "ours":  # the whole run, consuming included
            cpu = (cpu_seconds() - started_cpu) / args.events
    finally:
        engine.dispose()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"events_per_s": rate, "peak_rss_mb": peak_mb, "cpu_s_per_event": cpu}))


if __name__ == "__main__":
    child(sys.argv[1:])
