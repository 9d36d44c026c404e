"""A Debezium Avro schema's fields as Connect schemas: the type of a column the target
lacks when a new schema version brings it (pure)."""

from __future__ import annotations

import orjson

from cdc_recon.apply.evolve import column_type
from cdc_recon.codecs.avro import plan_schema

VALUE = {
    "type": "record",
    "name": "Envelope",
    "namespace": "e2e.public.accounts",
    "fields": [
        {
            "name": "before",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Value",
                    "fields": [
                        {"name": "id", "type": "int"},
                        {
                            "name": "small",
                            "type": ["null", {"type": "int", "connect.type": "int16"}],
                        },
                        {
                            "name": "amount",
                            "type": {
                                "type": "bytes",
                                "scale": 2,
                                "precision": 12,
                                "connect.name": "org.apache.kafka.connect.data.Decimal",
                                "logicalType": "decimal",
                                "connect.parameters": {
                                    "scale": "2",
                                    "connect.decimal.precision": "12",
                                },
                            },
                        },
                        {
                            "name": "at",
                            "type": [
                                "null",
                                {
                                    "type": "long",
                                    "connect.version": 1,
                                    "connect.name": "io.debezium.time.MicroTimestamp",
                                },
                            ],
                        },
                        {"name": "loyalty", "type": ["null", "int"], "default": None},
                        {"name": "tags", "type": ["null", {"type": "array", "items": "string"}]},
                    ],
                },
            ],
            "default": None,
        },
        {"name": "after", "type": ["null", "Value"], "default": None},
        {"name": "source", "type": {"type": "record", "name": "Source", "fields": []}},
        {"name": "op", "type": "string"},
    ],
}


def test_every_after_field_has_its_connect_schema() -> None:
    plan = plan_schema(orjson.dumps(VALUE).decode(), 3)
    fields = plan.convert.fields or {}
    assert {name: column_type(field)[0] for name, field in fields.items()} == {
        "id": "integer",
        "small": "smallint",
        "amount": "numeric(12,2)",
        "at": column_type({"name": "io.debezium.time.MicroTimestamp", "type": "int64"})[0],
        "loyalty": "integer",
        "tags": "text[]",
    }
