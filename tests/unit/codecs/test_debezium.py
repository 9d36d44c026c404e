"""Debezium JSON messages → ChangeEvent, on fixtures modelled on Debezium 3.0's docs."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdc_recon.codecs import debezium, decode, decode_debezium
from cdc_recon.codecs.debezium import decode_key, strip_unavailable
from cdc_recon.events import Op, SourcePosition
from cdc_recon.exceptions import ConfigError, DecodeError

DATA = Path(__file__).parent / "data"


def fixture(name: str) -> tuple[bytes | None, bytes | None]:
    document = orjson.loads((DATA / name).read_bytes())
    return _dumps(document["key"]), _dumps(document["value"])


def document(name: str) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads((DATA / name).read_bytes())
    return parsed


def _dumps(part: Any) -> bytes | None:
    return None if part is None else orjson.dumps(part)


def bare_pg(op: str = "c", **source: Any) -> dict[str, Any]:
    base = {
        "connector": "postgresql",
        "ts_ms": 1_700_000_000_000,
        "schema": "public",
        "table": "t",
        "txId": 5,
        "lsn": 100,
    }
    after = None if op in ("d", "t") else {"id": 1, "name": "x"}
    return {"op": op, "after": after, "source": {**base, **source}}


def test_postgres_create_with_schemas_converts_logical_types() -> None:
    event = decode(*fixture("pg_create.json"))
    assert event is not None
    assert (event.table, event.op, dict(event.key)) == ("public.orders", Op.CREATE, {"id": 1001})
    assert event.position == SourcePosition((24023128,))
    assert (event.tx, event.source_ts_ms, event.unavailable) == ("771", 1714564800200, frozenset())
    assert event.after == {
        "id": 1001,
        "customer_email": "annek@noanswer.org",
        "total": Decimal("1234.50"),
        "weight": Decimal("-2.500"),
        "placed_on": dt.date(2024, 5, 1),
        "placed_at": dt.datetime(2024, 5, 1, 12, 0, 0, 123456),
        "updated_at": dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC),
        "pickup_time": dt.time(14, 30),
        "tracking_id": uuid.UUID("6f1c2a7e-3b7d-4f5e-9a61-0c8f2d9b4e11"),
        "attrs": '{"gift": true, "lines": [1, 2]}',
        "notes": "leave at the door",
        "label": b"\x01\x02\x03",
        "tags": ["express", "fragile"],
    }


def test_decimal_keeps_its_scale_and_json_stays_text() -> None:
    event = decode(*fixture("pg_create.json"))
    assert event is not None and event.after is not None
    assert str(event.after["total"]) == "1234.50"
    assert isinstance(event.after["attrs"], str)


def test_unchanged_toast_columns_are_removed_and_named() -> None:
    event = decode(*fixture("pg_update_toast.json"))
    assert event is not None and event.after is not None
    assert event.op is Op.UPDATE
    assert event.unavailable == frozenset({"notes", "label", "tags"})
    assert not {"notes", "label", "tags"} & event.after.keys()
    assert event.after["customer_email"] == "anne.marie@noanswer.org"
    assert event.after["total"] == Decimal("1234.50")
    assert (event.tx, event.position) == ("772", SourcePosition((24023400,)))


def test_delete_takes_its_key_from_the_message_key() -> None:
    event = decode(*fixture("pg_delete.json"))
    assert event is not None
    assert (event.op, dict(event.key), event.after) == (Op.DELETE, {"id": 1001}, None)
    assert (event.tx, event.position) == ("773", SourcePosition((24023712,)))


def test_tombstone_is_ignored() -> None:
    key, value = fixture("pg_tombstone.json")
    assert key is not None and value is None
    assert decode(key, value) is None
    assert decode_debezium(key, value) is None


def test_wrapped_null_payload_is_a_tombstone() -> None:
    assert decode(b'{"id": 1}', b'{"schema":null,"payload":null}') is None


def test_truncate_has_an_empty_key_and_no_row() -> None:
    event = decode(*fixture("pg_truncate.json"))
    assert event is not None
    assert (event.op, dict(event.key), event.after) == (Op.TRUNCATE, {}, None)
    assert (event.table, event.tx) == ("public.orders", "774")


def test_schemaless_snapshot_read_takes_the_lsn_from_sequence() -> None:
    event = decode(*fixture("pg_snapshot_read_noschema.json"))
    assert event is not None and event.after is not None
    assert (event.op, dict(event.key)) == (Op.READ, {"id": 1000})
    assert event.position == SourcePosition((24001000,))
    assert event.after["total"] == "MDk="  # no schema: values pass through


def test_mysql_update_positions_by_binlog_file_pos_and_row() -> None:
    event = decode(*fixture("mysql_update.json"))
    assert event is not None and event.after is not None
    assert (event.table, event.op) == ("inventory.customers", Op.UPDATE)
    assert event.position == SourcePosition((10, 805, 0))
    assert event.tx == "mysql-bin.000010:805"
    assert event.after["balance"] == Decimal("-10.50")
    assert event.after["birthday"] == dt.date(1978, 3, 20)
    assert event.after["last_login"] == dt.datetime(2024, 5, 1, 12, 3, 19, 999000)


def test_mysql_gtid_is_the_transaction_marker() -> None:
    value = document("mysql_update.json")["value"]
    value["payload"]["source"]["gtid"] = "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"
    event = decode(b'{"id": 1004}', orjson.dumps(value))
    assert event is not None
    assert event.tx == "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"


@pytest.mark.parametrize("tx_id", [(3 << 32) | 771, 2**32 + 1, 2**63 - 1, -5])
def test_a_txid_outside_32_bits_is_refused_not_masked(tx_id: int) -> None:
    # Debezium's PostgreSQL connector sends the 32-bit xid: a wider one masked would
    # collide with another transaction's change id (4294967297 with 1).
    with pytest.raises(DecodeError, match="txId"):
        decode(b'{"id": 1}', orjson.dumps(bare_pg(txId=tx_id)))


def test_a_txid_past_64_bits_is_refused() -> None:
    value = orjson.dumps(bare_pg(txId=1)).replace(b'"txId":1', b'"txId":18446744073709551616')
    with pytest.raises(DecodeError):
        decode(b'{"id": 1}', value)


@pytest.mark.parametrize("lsn", [0, 2**60, 2**63 - 1])
def test_an_lsn_no_server_writes_is_refused(lsn: int) -> None:
    with pytest.raises(DecodeError, match="lsn"):
        decode(b'{"id": 1}', orjson.dumps(bare_pg(lsn=lsn)))


def test_wide_decimal_is_exact() -> None:
    value = document("pg_create.json")["value"]
    unscaled = 12345678901234567890123456789012345678
    raw = unscaled.to_bytes(17, "big", signed=True)
    value["payload"]["after"]["total"] = base64.b64encode(raw).decode()
    event = decode(b'{"id": 1001}', orjson.dumps(value))
    assert event is not None and event.after is not None
    assert event.after["total"] == Decimal("123456789012345678901234567890123456.78")


def test_cached_schema_gives_the_same_event_as_a_fresh_parse() -> None:
    key, value = fixture("pg_create.json")
    assert value is not None
    first, second = decode(key, value), decode(key, value)
    assert first == second
    with_extra_field = value[:-1] + b',"extra":1}'
    assert decode(key, with_extra_field) == first
    assert decode(key, value.replace(b'"payload":', b'"payload": ')) == first


def test_a_repeated_schema_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    key, value = fixture("pg_update_toast.json")
    first = decode(key, value)

    class Refuses:
        def decode(self, _: bytes) -> None:
            raise AssertionError("the full message was parsed again")

    monkeypatch.setattr(debezium, "_VALUE_DECODER", Refuses())
    monkeypatch.setattr(debezium, "_WRAPPED_KEY_DECODER", Refuses())
    assert decode(key, value) == first


def test_cached_schema_with_a_broken_payload_is_still_an_error() -> None:
    key, value = fixture("pg_create.json")
    assert value is not None
    decode(key, value)
    broken = value.replace(b'"op":"c"', b'"op":7')
    with pytest.raises(DecodeError, match="op"):
        decode(key, broken)


def test_key_with_a_logical_type_is_converted() -> None:
    schema = {
        "type": "struct",
        "fields": [{"type": "string", "name": "io.debezium.data.Uuid", "field": "id"}],
    }
    key = orjson.dumps(
        {"schema": schema, "payload": {"id": "6f1c2a7e-3b7d-4f5e-9a61-0c8f2d9b4e11"}}
    )
    assert decode_key(key) == {"id": uuid.UUID("6f1c2a7e-3b7d-4f5e-9a61-0c8f2d9b4e11")}
    assert decode_key(key) == decode_key(key)


def test_bare_key_and_null_key_payload() -> None:
    assert decode_key(b'{"id": 1, "region": "eu"}') == {"id": 1, "region": "eu"}
    assert decode_key(b'{"schema": null, "payload": null}') is None
    assert decode_key(None) is None


def test_placeholders_are_stripped_without_a_schema() -> None:
    value = bare_pg("u")
    value["after"]["blob"] = "5f5f646562657a69756d5f756e617661696c61626c655f76616c7565"
    event = decode(b'{"id": 1}', orjson.dumps(value))
    assert event is not None and event.after == {"id": 1, "name": "x"}
    assert event.unavailable == frozenset({"blob"})


def test_strip_unavailable_leaves_ordinary_rows_alone() -> None:
    row = {"a": "__debezium_unavailable_valu", "b": ["x"], "c": b"raw", "d": 1}
    assert strip_unavailable(dict(row)) == (row, frozenset())


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, bare_pg("c"), "no message key"),
        (b'{"id": 1}', bare_pg("m"), "unsupported Debezium op"),
        (b'{"id": 1}', {**bare_pg("c"), "after": None}, "without an after image"),
        (b'{"id": 1}', bare_pg("c", connector="sqlserver"), "unsupported Debezium connector"),
        (b'{"id": 1}', bare_pg("c", txId=None), "txId"),
        (b'{"id": 1}', bare_pg("c", table=None), "table"),
        (b'{"id": 1}', bare_pg("c", lsn=None), "neither lsn nor sequence"),
        (b'{"id": 1}', bare_pg("c", lsn=None, sequence="[1,"), "sequence"),
        (b'{"id": 1}', bare_pg("c", lsn=-1), "position"),
        (b"not json", bare_pg("c"), "key is not JSON"),
        (b"[1, 2]", bare_pg("c"), "key is not a JSON object"),
        (b'{"id": 1}', {"op": "c", "after": {}, "source": {"connector": "postgresql"}}, "ts_ms"),
        (b'{"id": 1}', {"schema": {}, "payload": 5}, "invalid Debezium JSON"),
    ],
)
def test_bad_messages_raise_decode_error(key: bytes | None, value: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(key, orjson.dumps(value))


def test_mysql_binlog_name_needs_a_numeric_suffix() -> None:
    value = document("mysql_update.json")["value"]
    value["payload"]["source"]["file"] = "mysql-bin"
    with pytest.raises(DecodeError, match="numeric suffix"):
        decode(b'{"id": 1004}', orjson.dumps(value))


@pytest.mark.parametrize("value", [b"", b"{", b"\xff\xfe", b"[1]", b'"text"', b"null", b"{}"])
def test_non_envelopes_raise_decode_error(value: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(b'{"id": 1}', value)
    with pytest.raises(DecodeError):
        decode_debezium(b'{"id": 1}', value)


def test_auto_names_both_formats_when_neither_fits() -> None:
    with pytest.raises(DecodeError, match="neither a Debezium envelope"):
        decode(None, b'{"table": "t"}')


def test_debezium_format_rejects_plain_messages() -> None:
    plain = b'{"table": "t", "operation": "INSERT", "key": 1, "timestamp": 5, "data": {}}'
    assert decode(None, plain) is not None
    with pytest.raises(DecodeError, match="not a Debezium envelope"):
        decode(None, plain, fmt="debezium")


def test_avro_bytes_without_a_decoder_are_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="no AvroDecoder"):
        decode(None, b"\x00\x00\x00\x00\x01\x02")
    with pytest.raises(DecodeError, match="no AvroDecoder"):
        decode(None, b'{"op": "c"}', fmt="avro")


def test_unknown_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError):
        decode(None, b"{}", fmt="protobuf")
