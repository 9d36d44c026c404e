"""Decode throughput for schema-wrapped Debezium JSON messages.

Times `cdc_recon.codecs.decode` (msgspec structs; a schema seen before is neither parsed
nor walked again, its converter is cached) against a baseline measured in the same run:
`json.loads` into dicts and a walk of each message's inline schema to find the
logical-typed columns, which is how a decoder without structs or caching reads them.
The rows carry a Decimal, a date, a microsecond timestamp, a UUID and JSON text among
nine columns; 2,000 distinct messages are cycled.

    python bench/decode.py [--messages 200000] [--repeat 3]

Prints `RESULT decode msgs_per_s=<n> vs_json_dicts=<ratio>`.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from cdc_recon.codecs import decode
from cdc_recon.codecs.debezium import OPS, Source, locate, strip_unavailable
from cdc_recon.codecs.logical import converter_for
from cdc_recon.events import ChangeEvent

DISTINCT = 2_000


def _field(name: str, kind: str, logical: str | None = None, **params: str) -> dict[str, Any]:
    field: dict[str, Any] = {"type": kind, "optional": name != "id", "field": name}
    if logical:
        field["name"] = logical
        field["version"] = 1
    if params:
        field["parameters"] = params
    return field


ROW_FIELDS = [
    _field("id", "int32"),
    _field("name", "string"),
    _field("email", "string"),
    _field("price", "bytes", "org.apache.kafka.connect.data.Decimal", scale="2"),
    _field("born", "int32", "io.debezium.time.Date"),
    _field("updated_at", "int64", "io.debezium.time.MicroTimestamp"),
    _field("uid", "string", "io.debezium.data.Uuid"),
    _field("attrs", "string", "io.debezium.data.Json"),
    _field("active", "boolean"),
]
SOURCE_FIELDS = [
    _field(name, kind)
    for name, kind in [
        ("version", "string"),
        ("connector", "string"),
        ("name", "string"),
        ("ts_ms", "int64"),
        ("snapshot", "string"),
        ("db", "string"),
        ("sequence", "string"),
        ("ts_us", "int64"),
        ("ts_ns", "int64"),
        ("schema", "string"),
        ("table", "string"),
        ("txId", "int64"),
        ("lsn", "int64"),
        ("xmin", "int64"),
    ]
]
VALUE_SCHEMA = {
    "type": "struct",
    "fields": [
        {"type": "struct", "fields": ROW_FIELDS, "optional": True, "field": "before"},
        {"type": "struct", "fields": ROW_FIELDS, "optional": True, "field": "after"},
        {"type": "struct", "fields": SOURCE_FIELDS, "optional": False, "field": "source"},
        _field("op", "string"),
        _field("ts_ms", "int64"),
    ],
    "optional": False,
    "name": "bench.public.customers.Envelope",
    "version": 2,
}
KEY_SCHEMA = {"type": "struct", "fields": [_field("id", "int32")], "optional": False}


def message(n: int) -> tuple[bytes, bytes]:
    price = (n * 137) % 1_000_000
    row = {
        "id": n,
        "name": f"customer {n}",
        "email": f"c{n}@example.com",
        "price": base64.b64encode(price.to_bytes(4, "big", signed=True)).decode(),
        "born": 7_000 + n % 10_000,
        "updated_at": 1_700_000_000_000_000 + n,
        "uid": str(uuid.UUID(int=n)),
        "attrs": '{"tier": "gold"}',
        "active": n % 2 == 0,
    }
    source = {
        "version": "3.0.0.Final",
        "connector": "postgresql",
        "name": "bench",
        "ts_ms": 1_700_000_000_000 + n,
        "snapshot": "false",
        "db": "shop",
        "sequence": f'["{24_000_000 + n}","{24_000_100 + n}"]',
        "ts_us": 1_700_000_000_000_000 + n,
        "ts_ns": 1_700_000_000_000_000_000 + n,
        "schema": "public",
        "table": "customers",
        "txId": 700 + n,
        "lsn": 24_000_100 + n,
        "xmin": None,
    }
    payload = {
        "before": None,
        "after": row,
        "source": source,
        "op": "c",
        "ts_ms": 1_700_000_000_999,
    }
    value = orjson.dumps({"schema": VALUE_SCHEMA, "payload": payload})
    key = orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": n}})
    return key, value


def baseline(key: bytes, value: bytes) -> ChangeEvent | None:
    """json.loads into dicts; the inline schema is walked again for every message."""
    document = json.loads(value)
    key_document = json.loads(key)
    payload = document["payload"]
    schema_fields = {field["field"]: field for field in document["schema"]["fields"]}
    after = payload["after"]
    for field in schema_fields["after"]["fields"]:
        convert = converter_for(field.get("name"), field.get("parameters"), field["type"])
        if convert is not None and after.get(field["field"]) is not None:
            after[field["field"]] = convert(after[field["field"]])
    after, unavailable = strip_unavailable(after)
    source = payload["source"]
    table, position, tx = locate(
        Source(source["connector"], source["ts_ms"], source["db"], source["schema"],
               source["table"], source["txId"], source["lsn"])
    )  # fmt: skip
    return ChangeEvent(table, OPS[payload["op"]], key_document["payload"], after, position,
                       source["ts_ms"], tx, unavailable)  # fmt: skip


def rate(
    decoder: Callable[[bytes, bytes], ChangeEvent | None], messages: list[Any], n: int
) -> float:
    rounds, rest = divmod(n, len(messages))
    batch = messages * rounds + messages[:rest]
    started = time.perf_counter()
    for key, value in batch:
        decoder(key, value)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of, alternating")
    args = parser.parse_args()
    messages = [message(n) for n in range(DISTINCT)]
    assert decode(*messages[1]) == baseline(*messages[1]), "decoders disagree"
    rate(decode, messages, 10_000)  # warm up: the schema cache and the allocator
    ours, theirs = 0.0, 0.0
    for _ in range(args.repeat):  # alternate, so both see the same machine load
        ours = max(ours, rate(decode, messages, args.messages))
        theirs = max(theirs, rate(baseline, messages, args.messages))
    size = sum(len(value) for _, value in messages) // len(messages)
    print(f"decoded {args.messages} messages of ~{size} bytes (schema-wrapped key and value),")
    print(f"best of {args.repeat}: {ours:.0f}/s, baseline json.loads + dict walk {theirs:.0f}/s")
    print(f"RESULT decode msgs_per_s={ours:.0f} vs_json_dicts={ours / theirs:.2f}")


if __name__ == "__main__":
    main()
