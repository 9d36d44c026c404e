"""Debezium-shaped JSON change events for tests, built by hand, and a producer helper.

A `ChangeLog` hands out increasing LSNs and transaction ids, so that the events it
builds are ordered like a real PostgreSQL source's. By default keys and values are bare
JSON, as the JSON converter writes them with `schemas.enable=false`; `wrapped=True`
writes `{"schema": ..., "payload": ...}` with a Connect schema inferred from the row.

    >>> log = ChangeLog(schema="public", table="customers")
    >>> key, value = log.insert({"id": 1, "name": "Ada"})
    >>> key
    b'{"id":1}'

`send(bootstrap, topic, messages)` writes `(key, value)` pairs (and an optional
partition) and waits until they are all acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

BASE_TS_MS = 1_700_000_000_000
KeyValue = tuple[bytes | None, bytes | None]
_SOURCE_SAMPLE = {
    "connector": "",
    "db": "",
    "schema": "",
    "table": "",
    "lsn": 2**40,
    "txId": 2**40,
    "ts_ms": 2**40,
}


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def connect_type(value: Any) -> str:
    """The Connect type Debezium gives a PostgreSQL column holding `value` (int, text...)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int32" if -(2**31) <= value < 2**31 else "int64"
    if isinstance(value, float):
        return "double"
    return "string"


def struct_schema(
    name: str, row: Mapping[str, Any], *, optional: bool, required: Iterable[str] = ()
) -> dict[str, Any]:
    """A Connect struct schema with a field per column of `row`."""
    needed = set(required)
    fields = [
        {"type": connect_type(value), "optional": column not in needed, "field": column}
        for column, value in row.items()
    ]
    return {"type": "struct", "fields": fields, "optional": optional, "name": name}


def value_schema(prefix: str, row: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The Connect schema of a Debezium PostgreSQL envelope whose rows look like `row`."""
    image = struct_schema(f"{prefix}.Value", row, optional=True, required=keys)
    source = struct_schema(
        "io.debezium.connector.postgresql.Source", _SOURCE_SAMPLE, optional=False
    )
    return {
        "type": "struct",
        "optional": False,
        "name": f"{prefix}.Envelope",
        "fields": [
            {**image, "field": "before"},
            {**image, "field": "after"},
            {**source, "field": "source"},
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
        ],
    }


def key_bytes(key: Mapping[str, Any], *, wrapped: bool = False, name: str = "Key") -> bytes:
    """A Debezium JSON message key: bare, or with its Connect schema."""
    if not wrapped:
        return _json(dict(key))
    schema = struct_schema(name, key, optional=False, required=key)
    return _json({"schema": schema, "payload": dict(key)})


def envelope(
    op: str,
    *,
    schema: str,
    table: str,
    lsn: int,
    tx: int,
    ts_ms: int,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    connect_schema: Mapping[str, Any] | None = None,
) -> bytes:
    """A Debezium PostgreSQL change event value; wrapped when a Connect schema is given."""
    payload = {
        "before": dict(before) if before is not None else None,
        "after": dict(after) if after is not None else None,
        "source": {
            "connector": "postgresql",
            "db": "source",
            "schema": schema,
            "table": table,
            "lsn": lsn,
            "txId": tx,
            "ts_ms": ts_ms,
        },
        "op": op,
        "ts_ms": ts_ms + 5,
    }
    if connect_schema is None:
        return _json(payload)
    return _json({"schema": connect_schema, "payload": payload})


@dataclass
class ChangeLog:
    """Builds the events of one source table, with increasing LSN / txId / timestamp."""

    schema: str = "public"
    table: str = "customers"
    key_columns: tuple[str, ...] = ("id",)
    wrapped: bool = False
    changes: int = 0

    def _where(self, row: Mapping[str, Any]) -> dict[str, Any]:
        self.changes += 1
        n = self.changes
        prefix = f"source.{self.schema}.{self.table}"
        return {
            "schema": self.schema,
            "table": self.table,
            "lsn": 1000 + n * 10,
            "tx": 500 + n,
            "ts_ms": BASE_TS_MS + n,
            "connect_schema": value_schema(prefix, row, self.key_columns) if self.wrapped else None,
        }

    def _key(self, row: Mapping[str, Any]) -> bytes:
        key = {column: row[column] for column in self.key_columns}
        name = f"source.{self.schema}.{self.table}.Key"
        return key_bytes(key, wrapped=self.wrapped, name=name)

    def insert(self, row: Mapping[str, Any]) -> KeyValue:
        return self._key(row), envelope("c", after=row, **self._where(row))

    def update(self, row: Mapping[str, Any]) -> KeyValue:
        return self._key(row), envelope("u", after=row, **self._where(row))

    def delete(self, row: Mapping[str, Any]) -> KeyValue:
        """A delete; `row` is the before image (the key columns at least)."""
        return self._key(row), envelope("d", before=row, **self._where(row))

    def tombstone(self, row: Mapping[str, Any]) -> KeyValue:
        """The null-value message Debezium writes after a delete, for log compaction."""
        return self._key(row), None


def send(
    bootstrap: str,
    topic: str,
    messages: Iterable[KeyValue | tuple[bytes | None, bytes | None, int]],
) -> int:
    """Write `(key, value[, partition])` messages to `topic`; returns how many were acked."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors: list[str] = []

    def delivered(error: Any, _msg: Any) -> None:
        if error is not None:
            errors.append(str(error))

    count = 0
    for message in messages:
        extra = {"partition": message[2]} if len(message) == 3 else {}
        producer.produce(topic, key=message[0], value=message[1], on_delivery=delivered, **extra)
        producer.poll(0)
        count += 1
    remaining = producer.flush(30)
    assert remaining == 0 and not errors, f"undelivered: {remaining}, errors: {errors[:3]}"
    return count
