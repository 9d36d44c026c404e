"""Writes the demo's change events: Debezium JSON (with Connect schemas) for
`public.customers`, as a PostgreSQL connector would, plus the faults a real pipeline
meets: a redelivered change, a change arriving after a newer one, a delete with its
tombstone, and one poison message. Prints what the target should hold afterwards.

Usage: python produce.py BOOTSTRAP TOPIC COUNT
"""

from __future__ import annotations

import json
import random
import sys

from confluent_kafka import Producer

KEY_SCHEMA = {
    "type": "struct",
    "name": "demo.public.customers.Key",
    "optional": False,
    "fields": [{"type": "int32", "optional": False, "field": "id"}],
}
ROW_FIELDS = [
    {"type": "int32", "optional": False, "field": "id"},
    {"type": "string", "optional": True, "field": "name"},
    {"type": "string", "optional": True, "field": "email"},
    {
        "type": "bytes",
        "optional": True,
        "field": "balance",
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2"},
    },
]
VALUE_SCHEMA = {
    "type": "struct",
    "name": "demo.public.customers.Envelope",
    "optional": False,
    "fields": [
        {"type": "struct", "optional": True, "field": "before", "fields": ROW_FIELDS},
        {"type": "struct", "optional": True, "field": "after", "fields": ROW_FIELDS},
        {"type": "struct", "optional": False, "field": "source", "fields": []},
        {"type": "string", "optional": False, "field": "op"},
    ],
}


def dumps(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def balance(cents: int) -> str:
    import base64

    return base64.b64encode(cents.to_bytes(8, "big", signed=True)).decode()


def main() -> None:
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(7)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    rows: dict[int, dict[str, object]] = {}
    sent: list[tuple[bytes, bytes | None]] = []
    for n in range(1, count + 1):
        key = rng.randrange(max(1, count // 4))
        where = {
            "connector": "postgresql",
            "db": "source",
            "schema": "public",
            "table": "customers",
            "lsn": 10_000 + n * 16,
            "txId": 700 + n,
            "ts_ms": 1_790_000_000_000 + n,
        }
        kbytes = dumps({"schema": KEY_SCHEMA, "payload": {"id": key}})
        if key in rows and rng.random() < 0.15:
            payload = {"before": {"id": key}, "after": None, "source": where, "op": "d"}
            sent += [(kbytes, dumps({"schema": VALUE_SCHEMA, "payload": payload})), (kbytes, None)]
            del rows[key]
            continue
        cents = rng.randrange(100_000)
        row = {
            "id": key,
            "name": f"customer {key}",
            "email": f"c{key}@example.com",
            "balance": balance(cents),
        }
        payload = {"before": None, "after": row, "source": where, "op": "u" if key in rows else "c"}
        sent.append((kbytes, dumps({"schema": VALUE_SCHEMA, "payload": payload})))
        rows[key] = {**row, "balance": cents / 100}
    late_key = next(iter(rows))
    late_where = {
        "connector": "postgresql",
        "db": "source",
        "schema": "public",
        "table": "customers",
        "lsn": 10_000,
        "txId": 600,
        "ts_ms": 1_790_000_000_000,
    }
    late = {
        "before": None,
        "after": {"id": late_key, "name": "stale", "email": None, "balance": None},
        "source": late_where,
        "op": "u",
    }
    faults = [
        sent[len(sent) // 2],  # redelivered
        (
            dumps({"schema": KEY_SCHEMA, "payload": {"id": late_key}}),
            dumps({"schema": VALUE_SCHEMA, "payload": late}),
        ),  # older than what the key holds
        (b'{"id": 1}', b"{this is not json"),  # poison
    ]
    for kbytes, value in sent + faults:
        producer.produce(topic, key=kbytes, value=value)
    if producer.flush(30) != 0:
        raise SystemExit("demo: Kafka did not acknowledge every event")
    print(
        json.dumps(
            {
                "messages": len(sent) + len(faults),
                "rows": len(rows),
                "redelivered": 1,
                "late": 1,
                "poison": 1,
            }
        )
    )


if __name__ == "__main__":
    main()
