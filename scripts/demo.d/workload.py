"""The demo's source workload and its change stream.

Runs COUNT small transactions (inserts, updates, deletes) on `<schema>.customers` in the
SOURCE database, whose change log (`cdc-recon source install`) records each change, and
publishes each change to Kafka as the Debezium PostgreSQL connector would (JSON with
Connect schemas, the transaction's xid as `txId`, the change-log LSN as `lsn`, a
tombstone after each delete). Then it injects the fault: LOST consecutive changes are
never published, as when a connector restarts across a gap.

Usage: python workload.py SOURCE_URL BOOTSTRAP TOPIC SCHEMA COUNT LOST
Prints a JSON summary.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import sys
from decimal import Decimal
from typing import Any

import psycopg2
from confluent_kafka import Producer

ROW = [
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
    {
        "type": "string",
        "optional": True,
        "field": "updated_at",
        "name": "io.debezium.time.ZonedTimestamp",
    },
]
KEY_SCHEMA = {"type": "struct", "optional": False, "fields": ROW[:1], "name": "demo.Key"}
VALUE_SCHEMA = {
    "type": "struct",
    "optional": False,
    "name": "demo.Envelope",
    "fields": [
        {"type": "struct", "optional": True, "field": "before", "fields": ROW},
        {"type": "struct", "optional": True, "field": "after", "fields": ROW},
        {"type": "struct", "optional": False, "field": "source", "fields": []},
        {"type": "string", "optional": False, "field": "op"},
    ],
}


def dumps(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def debezium_row(row: tuple[Any, ...]) -> dict[str, Any]:
    key, name, email, balance, updated_at = row
    unscaled = int(Decimal(balance) * 100)
    raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8 or 1, "big", signed=True)
    return {
        "id": key,
        "name": name,
        "email": email,
        "balance": base64.b64encode(raw).decode(),
        "updated_at": updated_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
    }


def change(cur: Any, schema: str, rng: random.Random, keys: set[int]) -> tuple[str, Any]:
    """One transaction on the source; returns (op, returned row) and its xid."""
    table = f'"{schema}".customers'
    key = rng.randrange(200)
    if key in keys and rng.random() < 0.15:
        cur.execute(f"DELETE FROM {table} WHERE id = %s RETURNING *", (key,))
        keys.discard(key)
        return "d", cur.fetchone()
    balance = Decimal(rng.randrange(1_000_000)) / 100
    if key in keys:
        cur.execute(
            f"UPDATE {table} SET balance = %s, updated_at = now() WHERE id = %s RETURNING *",
            (balance, key),
        )
        return "u", cur.fetchone()
    keys.add(key)
    cur.execute(
        f"INSERT INTO {table} VALUES (%s, %s, %s, %s, now()) RETURNING *",
        (key, f"customer {key} ✓", f"c{key}@example.com", balance),
    )
    return "c", cur.fetchone()


def main() -> None:
    source_url, bootstrap, topic, schema = sys.argv[1:5]
    count, lost = int(sys.argv[5]), int(sys.argv[6])
    rng = random.Random(11)
    conn = psycopg2.connect(source_url)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    keys: set[int] = set()
    gap = range(count // 2, count // 2 + lost)
    for n in range(count):
        with conn.cursor() as cur:
            op, row = change(cur, schema, rng, keys)
            cur.execute("SELECT txid_current() & 4294967295")
            xid = cur.fetchone()[0]
        conn.commit()
        with conn.cursor() as cur:
            cur.execute(
                "SELECT (lsn - '0/0'::pg_lsn)::bigint FROM cdc_recon_source.changes "
                "WHERE txid & 4294967295 = %s ORDER BY id DESC LIMIT 1",
                (xid,),
            )
            lsn = cur.fetchone()[0]
        conn.commit()
        if n in gap:
            continue  # the fault: the connector never published these changes
        source = {
            "connector": "postgresql",
            "db": "source",
            "schema": schema,
            "table": "customers",
            "lsn": lsn,
            "txId": xid,
            "ts_ms": int(dt.datetime.now(dt.UTC).timestamp() * 1000),
        }
        image = debezium_row(row)
        before, after = (image, None) if op == "d" else (None, image)
        payload = {"before": before, "after": after, "source": source, "op": op}
        key = dumps({"schema": KEY_SCHEMA, "payload": {"id": row[0]}})
        producer.produce(topic, key=key, value=dumps({"schema": VALUE_SCHEMA, "payload": payload}))
        if op == "d":
            producer.produce(topic, key=key, value=None)
    if producer.flush(30) != 0:
        raise SystemExit("workload: Kafka did not acknowledge every event")
    print(json.dumps({"changes": count, "published": count - lost, "lost": lost}))


if __name__ == "__main__":
    main()
