"""New source columns (`apply.evolve`, the mapper's `on_new_column`): pure logic."""

from __future__ import annotations

from typing import Any

import pytest

from cdc_recon.apply.evolve import column_type
from cdc_recon.apply.mapping import TableMapper, TargetShape
from cdc_recon.apply.schema_changes import unaddable
from cdc_recon.batch import Decoded, Message
from cdc_recon.config import TableMapping
from cdc_recon.events import ChangeEvent, Op, SourcePosition
from cdc_recon.exceptions import MappingError, NewColumns

DECIMAL = "org.apache.kafka.connect.data.Decimal"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ({"type": "int16"}, "smallint"),
        ({"type": "int32"}, "integer"),
        ({"type": "int64"}, "bigint"),
        ({"type": "float64"}, "double precision"),
        ({"type": "boolean"}, "boolean"),
        ({"type": "string"}, "text"),
        ({"type": "bytes"}, "bytea"),
        ({"type": "bytes", "name": DECIMAL, "parameters": {"scale": "2"}}, "numeric"),
        (
            {
                "type": "bytes",
                "name": DECIMAL,
                "parameters": {"scale": "2", "connect.decimal.precision": "12"},
            },
            "numeric(12,2)",
        ),
        ({"type": "struct", "name": "io.debezium.data.VariableScaleDecimal"}, "numeric"),
        ({"type": "string", "name": "io.debezium.time.ZonedTimestamp"}, "timestamp with time zone"),
        ({"type": "int64", "name": "io.debezium.time.MicroTimestamp"}, "timestamp"),
        ({"type": "int32", "name": "io.debezium.time.Date"}, "date"),
        ({"type": "string", "name": "io.debezium.data.Json"}, "jsonb"),
        ({"type": "string", "name": "io.debezium.data.Uuid"}, "uuid"),
        ({"type": "array", "items": {"type": "int32"}}, "integer[]"),
    ],
)
def test_connect_types_become_target_types(field: dict[str, Any], expected: str) -> None:
    assert column_type(field) == (expected, None)


def test_an_unknown_type_is_text_and_says_why() -> None:
    assert column_type(None) == ("text", "the message carries no schema for it")
    kind, note = column_type({"type": "struct", "name": "io.debezium.data.geometry.Point"})
    assert kind == "text" and note is not None and "geometry.Point" in note


def mapper(policy: str, **mapping: Any) -> TableMapper:
    config = TableMapping(
        source="public.t", target="public.t", key=("id",), on_new_column=policy, **mapping
    )
    return TableMapper(
        config, TargetShape("public.t", ("id", "name"), ("id",), types=("integer", "text"))
    )


def decoded(after: dict[str, Any], types: dict[str, Any] | None = None) -> Decoded:
    event = ChangeEvent(
        "public.t",
        Op.UPDATE,
        {"id": after["id"]},
        after,
        SourcePosition((10,)),
        1,
        "7",
        source_types=types,
    )
    return Decoded(Message("t", 0, 1, None, None), event)


def test_add_names_the_new_columns_with_their_source_types() -> None:
    types = {"loyalty": {"type": "int32", "field": "loyalty"}}
    with pytest.raises(NewColumns) as raised:
        mapper("add", rename={"tier": "level"}).change(
            decoded({"id": 1, "name": "a", "loyalty": 3, "tier": "x"}, types)
        )
    assert raised.value.columns == [("loyalty", types["loyalty"]), ("level", None)]


def test_an_excluded_new_column_is_never_added() -> None:
    change = mapper("add", exclude=("secret",)).change(decoded({"id": 1, "name": "a", "secret": 1}))
    assert change.row == (1, "a")


def test_ignore_leaves_the_column_out_and_counts_it() -> None:
    table = mapper("ignore")
    for _ in range(3):
        assert table.change(decoded({"id": 1, "name": "a", "extra": 5})).row == (1, "a")
    assert table.ignored == {"extra": 3}


def test_quarantine_refuses_the_change() -> None:
    with pytest.raises(MappingError, match="column 'extra' of public.t has no column"):
        mapper("quarantine").change(decoded({"id": 1, "name": "a", "extra": 5}))


@pytest.mark.parametrize(
    ("name", "field", "why"),
    [
        ("loyalty", {"type": "int32"}, None),
        ("tier level", {"type": "string"}, None),
        ("discount", None, "no schema"),
        ('sta"tus', {"type": "string"}, "quotes"),
        ("amount'", {"type": "string"}, "quotes"),
        ("note\n", {"type": "string"}, "control characters"),
        ("a\x1b[2J", {"type": "string"}, "control characters"),
        ("id ", {"type": "string"}, "surrounding spaces"),
        ("x" * 64, {"type": "string"}, "63 bytes"),
        ("Status", {"type": "string"}, "another case"),
    ],
)
def test_a_new_column_is_added_only_with_a_type_and_a_plausible_name(
    name: str, field: dict[str, Any] | None, why: str | None
) -> None:
    problem = unaddable(name, field, ("id", "status"))
    assert problem is None if why is None else problem is not None and why in problem
