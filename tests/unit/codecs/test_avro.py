"""Avro (Confluent wire format) → ChangeEvent, against an in-memory fake registry."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from cdc_recon.codecs import AvroDecoder, decode, encode_change_event
from cdc_recon.codecs.avro import CHANGE_EVENT_SCHEMA_PATH, change_event_schema_text
from cdc_recon.events import ChangeEvent, Op, SourcePosition
from cdc_recon.exceptions import ConnectionFailed, DecodeError

EVENT_ID, ENVELOPE_ID, KEY_ID, UUID_KEY_ID, OTHER_ID = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class RegisteredSchema:
    schema_str: str


class RegistryError(Exception):
    def __init__(self, http_status_code: int) -> None:
        super().__init__(f"HTTP {http_status_code}")
        self.http_status_code = http_status_code


@dataclass
class FakeRegistry:
    """Answers like SchemaRegistryClient.get_schema; records what it was asked."""

    schemas: dict[int, str]
    calls: list[int] = field(default_factory=list)
    status: int = 404

    def get_schema(self, schema_id: int) -> RegisteredSchema:
        self.calls.append(schema_id)
        if schema_id not in self.schemas:
            raise RegistryError(self.status)
        return RegisteredSchema(self.schemas[schema_id])


def optional(avro_type: Any) -> dict[str, Any]:
    return {"type": ["null", avro_type], "default": None}


def connect(avro_type: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"type": avro_type, "connect.version": 1, "connect.name": name, **extra}


VALUE_RECORD = {
    "type": "record",
    "name": "Value",
    "fields": [
        {"name": "id", "type": {"type": "int", "connect.default": 0}, "default": 0},
        {
            "name": "total",
            **optional(
                connect(
                    "bytes",
                    "org.apache.kafka.connect.data.Decimal",
                    scale=2,
                    precision=10,
                    logicalType="decimal",
                    **{"connect.parameters": {"scale": "2", "connect.decimal.precision": "10"}},
                )
            ),
        },
        {
            "name": "weight",
            **optional(
                {
                    "type": "record",
                    "name": "VariableScaleDecimal",
                    "namespace": "io.debezium.data",
                    "fields": [
                        {"name": "scale", "type": "int"},
                        {"name": "value", "type": "bytes"},
                    ],
                    "connect.version": 1,
                    "connect.name": "io.debezium.data.VariableScaleDecimal",
                }
            ),
        },
        {"name": "placed_on", **optional(connect("int", "io.debezium.time.Date"))},
        {"name": "placed_at", **optional(connect("long", "io.debezium.time.MicroTimestamp"))},
        {"name": "updated_at", **optional(connect("string", "io.debezium.time.ZonedTimestamp"))},
        {"name": "tracking_id", **optional(connect("string", "io.debezium.data.Uuid"))},
        {
            "name": "born",
            **optional(connect("int", "org.apache.kafka.connect.data.Date", logicalType="date")),
        },
        {"name": "notes", **optional("string")},
        {"name": "label", **optional("bytes")},
    ],
    "connect.name": "shop.public.orders.Value",
}
SOURCE_RECORD = {
    "type": "record",
    "name": "Source",
    "namespace": "io.debezium.connector.postgresql",
    "fields": [
        {"name": "version", "type": "string"},
        {"name": "connector", "type": "string"},
        {"name": "name", "type": "string"},
        {"name": "ts_ms", "type": "long"},
        {"name": "snapshot", **optional(connect("string", "io.debezium.data.Enum"))},
        {"name": "db", "type": "string"},
        {"name": "sequence", **optional("string")},
        {"name": "schema", "type": "string"},
        {"name": "table", "type": "string"},
        {"name": "txId", **optional("long")},
        {"name": "lsn", **optional("long")},
        {"name": "xmin", **optional("long")},
    ],
    "connect.name": "io.debezium.connector.postgresql.Source",
}
ENVELOPE = {
    "type": "record",
    "name": "Envelope",
    "namespace": "shop.public.orders",
    "fields": [
        {"name": "before", **optional(VALUE_RECORD)},
        {"name": "after", **optional("Value")},  # a reference, as the Avro converter writes it
        {"name": "source", "type": SOURCE_RECORD},
        {
            "name": "transaction",
            **optional(
                {
                    "type": "record",
                    "name": "block",
                    "namespace": "event",
                    "fields": [
                        {"name": "id", "type": "string"},
                        {"name": "total_order", "type": "long"},
                        {"name": "data_collection_order", "type": "long"},
                    ],
                }
            ),
        },
        {"name": "op", "type": "string"},
        {"name": "ts_ms", **optional("long")},
    ],
    "connect.version": 2,
    "connect.name": "shop.public.orders.Envelope",
}
KEY = {
    "type": "record",
    "name": "Key",
    "namespace": "shop.public.orders",
    "fields": [{"name": "id", "type": "int"}],
}
UUID_KEY = {
    "type": "record",
    "name": "Key",
    "namespace": "shop.public.tickets",
    "fields": [{"name": "id", "type": connect("string", "io.debezium.data.Uuid")}],
}
OTHER = {"type": "record", "name": "Heartbeat", "fields": [{"name": "ts_ms", "type": "long"}]}

SCHEMAS = {
    EVENT_ID: change_event_schema_text(),
    ENVELOPE_ID: json.dumps(ENVELOPE),
    KEY_ID: json.dumps(KEY),
    UUID_KEY_ID: json.dumps(UUID_KEY),
    OTHER_ID: json.dumps(OTHER),
}


def wire(schema_id: int, record: Any) -> bytes:
    stream = io.BytesIO()
    stream.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(
        stream, fastavro.parse_schema(json.loads(SCHEMAS[schema_id])), record
    )
    return stream.getvalue()


def envelope_record(op: str = "u", **after: Any) -> dict[str, Any]:
    row = {
        "id": 1001,
        "total": Decimal("1234.50"),
        "weight": {"scale": 3, "value": (-2500).to_bytes(2, "big", signed=True)},
        "placed_on": 19844,
        "placed_at": 1_714_564_800_123_456,
        "updated_at": "2024-05-01T12:00:00Z",
        "tracking_id": "6f1c2a7e-3b7d-4f5e-9a61-0c8f2d9b4e11",
        "born": dt.date(1978, 3, 20),
        "notes": "leave at the door",
        "label": b"\x01",
        **after,
    }
    source = {
        "version": "3.0.7.Final",
        "connector": "postgresql",
        "name": "shop",
        "ts_ms": 1714564860000,
        "snapshot": "false",
        "db": "shop",
        "sequence": None,
        "schema": "public",
        "table": "orders",
        "txId": 772,
        "lsn": 24023400,
        "xmin": None,
    }
    return {
        "before": None,
        "after": None if op == "d" else row,
        "source": source,
        "transaction": {"id": "772:24023400", "total_order": 1, "data_collection_order": 1},
        "op": op,
        "ts_ms": 1714564860101,
    }


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry(dict(SCHEMAS))


@pytest.fixture
def decoder(registry: FakeRegistry) -> AvroDecoder:
    return AvroDecoder(registry)


def sample_event(**changes: Any) -> ChangeEvent:
    event = ChangeEvent(
        table="public.orders",
        op=Op.UPDATE,
        key={"id": 1001},
        after={"id": 1001, "paid": True, "total": 12.5, "note": None, "blob": b"\x00\xff"},
        position=SourcePosition((24023400,)),
        source_ts_ms=1714564860000,
        tx="772",
        unavailable=frozenset({"notes"}),
    )
    return event.replace(**changes)


def test_change_event_round_trip(decoder: AvroDecoder, registry: FakeRegistry) -> None:
    event = sample_event()
    message = encode_change_event(event, EVENT_ID)
    assert message[:5] == b"\x00\x00\x00\x00\x01"
    assert decoder.decode(None, message) == event
    assert decode(None, message, avro=decoder) == event
    assert decode(None, message, fmt="avro", avro=decoder) == event
    assert registry.calls == [EVENT_ID]  # fetched once, then cached


def test_truncate_and_delete_events_round_trip(decoder: AvroDecoder) -> None:
    for event in (
        sample_event(op=Op.DELETE, after=None, unavailable=frozenset()),
        sample_event(op=Op.TRUNCATE, key={}, after=None, tx=None),
    ):
        assert decoder.decode(None, encode_change_event(event, EVENT_ID)) == event


def test_values_without_an_avro_type_are_written_as_text(decoder: AvroDecoder) -> None:
    after = {
        "total": Decimal("1.50"),
        "id": uuid.UUID(int=1),
        "on": dt.date(2024, 5, 1),
        "at": dt.datetime(2024, 5, 1, 12, 0),
        "time": dt.time(14, 30),
    }
    decoded = decoder.decode(None, encode_change_event(sample_event(after=after), EVENT_ID))
    assert decoded is not None
    assert decoded.after == {
        "total": "1.50",
        "id": "00000000-0000-0000-0000-000000000001",
        "on": "2024-05-01",
        "at": "2024-05-01T12:00:00",
        "time": "14:30:00",
    }


def test_unrepresentable_values_cannot_be_encoded() -> None:
    with pytest.raises(TypeError, match="no io.cdcrecon.ChangeEvent representation"):
        encode_change_event(sample_event(after={"x": object()}), EVENT_ID)


def test_debezium_avro_envelope_is_normalised_like_json(decoder: AvroDecoder) -> None:
    event = decoder.decode(wire(KEY_ID, {"id": 1001}), wire(ENVELOPE_ID, envelope_record()))
    assert event is not None
    assert (event.table, event.op, dict(event.key)) == ("public.orders", Op.UPDATE, {"id": 1001})
    assert (event.position, event.tx) == (SourcePosition((24023400,)), "772")
    assert event.after == {
        "id": 1001,
        "total": Decimal("1234.50"),
        "weight": Decimal("-2.500"),
        "placed_on": dt.date(2024, 5, 1),
        "placed_at": dt.datetime(2024, 5, 1, 12, 0, 0, 123456),
        "updated_at": dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC),
        "tracking_id": uuid.UUID("6f1c2a7e-3b7d-4f5e-9a61-0c8f2d9b4e11"),
        "born": dt.date(1978, 3, 20),
        "notes": "leave at the door",
        "label": b"\x01",
    }


def test_debezium_avro_with_a_json_key_and_placeholders(decoder: AvroDecoder) -> None:
    record = envelope_record(
        notes="__debezium_unavailable_value", label=b"__debezium_unavailable_value"
    )
    event = decode(b'{"id": 1001}', wire(ENVELOPE_ID, record), avro=decoder)
    assert event is not None and event.after is not None
    assert event.unavailable == frozenset({"notes", "label"})
    assert not {"notes", "label"} & event.after.keys()


def test_debezium_avro_delete_and_tombstone(decoder: AvroDecoder) -> None:
    key = wire(KEY_ID, {"id": 1001})
    event = decoder.decode(key, wire(ENVELOPE_ID, envelope_record("d")))
    assert event is not None and (event.op, event.after, dict(event.key)) == (
        Op.DELETE,
        None,
        {"id": 1001},
    )
    assert decoder.decode(key, None) is None
    assert decode(key, None, fmt="avro", avro=decoder) is None


def test_avro_key_logical_types_are_converted(decoder: AvroDecoder) -> None:
    key = wire(UUID_KEY_ID, {"id": "6f1c2a7e-3b7d-4f5e-9a61-0c8f2d9b4e11"})
    assert decoder.decode_key(key) == {"id": uuid.UUID("6f1c2a7e-3b7d-4f5e-9a61-0c8f2d9b4e11")}


def test_envelope_needs_a_key(decoder: AvroDecoder) -> None:
    with pytest.raises(DecodeError, match="no message key"):
        decoder.decode(None, wire(ENVELOPE_ID, envelope_record()))


def test_unknown_schema_id_is_a_decode_error(decoder: AvroDecoder) -> None:
    with pytest.raises(DecodeError, match="schema id 99 is not in the registry"):
        decoder.decode(None, b"\x00\x00\x00\x00\x63\x02")


def test_registry_outage_is_not_blamed_on_the_message() -> None:
    decoder = AvroDecoder(FakeRegistry({}, status=503))
    with pytest.raises(ConnectionFailed) as caught:
        decoder.decode(None, b"\x00\x00\x00\x00\x01\x02")
    assert caught.value.service == "schema-registry"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x00\x00\x00", "wire format"),
        (b"{}", "wire format"),
        (b"\x00\x00\x00\x00\x01", "does not match schema id 1"),
        (b"\x00\x00\x00\x00\x01\x80", "does not match schema id 1"),
    ],
)
def test_corrupt_messages(decoder: AvroDecoder, value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decoder.decode(None, value)


def test_trailing_bytes_are_an_error(decoder: AvroDecoder) -> None:
    message = encode_change_event(sample_event(), EVENT_ID)
    with pytest.raises(DecodeError, match="trailing bytes"):
        decoder.decode(None, message + b"\x00")


def test_invalid_change_event_record(decoder: AvroDecoder) -> None:
    record = _record(sample_event())
    assert decoder.decode(None, wire(EVENT_ID, record)) == sample_event()
    negative = wire(EVENT_ID, {**record, "position": [-1]})
    with pytest.raises(DecodeError, match="invalid io.cdcrecon.ChangeEvent"):
        decoder.decode(None, negative)
    rowless = wire(EVENT_ID, {**record, "op": "c", "after": None})
    with pytest.raises(DecodeError, match="needs a row image"):
        decoder.decode(None, rowless)


def _record(event: ChangeEvent) -> dict[str, Any]:
    return {
        "table": event.table,
        "op": event.op.value,
        "key": dict(event.key),
        "after": None if event.after is None else dict(event.after),
        "position": list(event.position.parts),
        "source_ts_ms": event.source_ts_ms,
        "tx": event.tx,
        "unavailable": sorted(event.unavailable),
    }


def test_other_schemas_are_rejected(decoder: AvroDecoder) -> None:
    with pytest.raises(DecodeError, match="neither io.cdcrecon.ChangeEvent nor a Debezium"):
        decoder.decode(None, wire(OTHER_ID, {"ts_ms": 1}))
    with pytest.raises(DecodeError, match="is not a record"):
        decoder.decode_key(wire(ENVELOPE_ID, envelope_record()))


def test_invalid_writer_schema(registry: FakeRegistry) -> None:
    registry.schemas[42] = '{"type": "record", "name": "X", "fields": [{"name": "a"}]}'
    with pytest.raises(DecodeError, match="not a valid Avro schema"):
        AvroDecoder(registry).decode(None, b"\x00\x00\x00\x00\x2a\x00")


def test_schema_cache_is_bounded(registry: FakeRegistry) -> None:
    decoder = AvroDecoder(registry, max_schemas=1)
    message = encode_change_event(sample_event(), EVENT_ID)
    decoder.decode(None, message)
    decoder.decode(b'{"id": 1001}', wire(ENVELOPE_ID, envelope_record()))
    decoder.decode(None, message)
    assert registry.calls == [EVENT_ID, ENVELOPE_ID, EVENT_ID]


def test_the_schema_file_describes_the_change_event() -> None:
    schema = json.loads(CHANGE_EVENT_SCHEMA_PATH.read_text())
    assert (schema["namespace"], schema["name"]) == ("io.cdcrecon", "ChangeEvent")
    fields = {item["name"]: item["type"] for item in schema["fields"]}
    assert list(fields) == [
        "table",
        "op",
        "key",
        "after",
        "position",
        "source_ts_ms",
        "tx",
        "unavailable",
    ]
    assert fields["op"]["symbols"] == [op.value for op in Op]
    values = ["null", "boolean", "long", "double", "string", "bytes"]
    assert fields["key"] == {"type": "map", "values": values}
    assert fields["after"] == ["null", {"type": "map", "values": values}]
