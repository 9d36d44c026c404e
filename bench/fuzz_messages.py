"""Seeded Debezium JSON messages for the fuzz bench: good changes and named hostile families.

Pure, no I/O. `generate(seed=…)` returns the messages in the order they are to be
produced (each with its family, what the service must do with it and its partition) and
the rows the good changes alone leave in the target table

    orders(id bigint primary key, status text, amount numeric(12,2), note text,
           updated_at timestamptz)

mapped from the source table `public.orders`. Every message takes the next source
position (LSN and txId rise by message, txIds are unique), so a hostile message that is
wrongly applied overwrites its key's row and shows up as a wrong row. A key's messages
all go to the partition `id % partitions`, so its good changes stay in order; hostile
messages aimed at a key go to that key's partition, where they can do the most harm.

    >>> batch = generate(seed=1, good=40, hostile=120, partitions=4, keys=10)
    >>> sorted({m.expect for m in batch.messages}) == ["apply", "quarantine", "skip"]
    True

The hostile families are `HOSTILE` below, one builder per family (issue 13's defect
number in brackets in its docstring where it has one). The first good change has txId 1,
so that `txid_collision` can send 4294967297 for its key. Four expectations are a policy
rather than something Debezium rules out, and are written down here so that they can be
argued with: `unknown_column` and `key_extra_column` (a column the target does not have,
in the image or in the key, is unmappable), `toast_only_after` (an image without its key
column is malformed: Debezium never TOASTs a bigint key) and `plain_format` (a plain
message in a stream of Debezium ones, whose millisecond position would beat every LSN).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

APPLY, QUARANTINE, SKIP = "apply", "quarantine", "skip"
SOURCE_TABLE = "public.orders"
PLACEHOLDER = "__debezium_unavailable_value"
FORGED = "1999-01-01 00:00:00,000 ERROR cdc_recon.service: FUZZ-FORGED"
DECIMAL = "org.apache.kafka.connect.data.Decimal"
ZONED = "io.debezium.time.ZonedTimestamp"
BASE_TS_MS = 1_760_000_000_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Valid bigint keys at the edges of the type, besides 1..keys.
EDGE_KEYS = (0, -1, 2**63 - 1, -(2**63))
HUGE_SIZES = (999_000, 1_048_000, 1_049_000, 1_572_864, 2_097_152)
STATUSES = (
    "new",
    "paid",
    "shipped",
    "",
    "café ☕",
    "日本語",
    "emoji 📦",
    "O'Brien",
    'quote " and \\ backslash',
    "tab\tnew\nline",
    "x" * 300,
)


@dataclass(frozen=True)
class Row:
    """A target row as the bench expects it: amounts as Decimal, times aware."""

    id: int
    status: str | None
    amount: Decimal | None
    note: str | None
    updated_at: dt.datetime | None


@dataclass(frozen=True)
class FuzzMessage:
    family: str
    expect: str  # APPLY (ledger) | QUARANTINE (failures) | SKIP (counted skip)
    key: bytes | None
    value: bytes | None
    partition: int
    target: int | None  # the good key it aims at (for hostile ones) or changes


@dataclass
class Batch:
    messages: list[FuzzMessage]
    expected: dict[int, Row]  # the rows the good changes leave
    families: dict[str, str]  # family → expect


def dumps(data: Any, *, ascii_only: bool = False) -> bytes:
    return json.dumps(data, ensure_ascii=ascii_only, separators=(",", ":")).encode()


def decimal_base64(unscaled: int) -> str:
    """Connect Decimal bytes: big-endian two's complement of the unscaled value."""
    size = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()


def zoned(moment: dt.datetime) -> str:
    """A ZonedTimestamp as Debezium writes it (ISO-8601, UTC, `Z`)."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _field(column: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "optional": column != "id", "field": column, **extra}


ROW_FIELDS: dict[str, dict[str, Any]] = {
    "id": _field("id", "int64"),
    "status": _field("status", "string"),
    "amount": _field(
        "amount",
        "bytes",
        name=DECIMAL,
        version=1,
        parameters={"scale": "2", "connect.decimal.precision": "12"},
    ),
    "note": _field("note", "string"),
    "updated_at": _field("updated_at", "string", name=ZONED, version=1),
}
SOURCE_FIELDS = [
    _field(name, kind)
    for name, kind in [
        ("version", "string"),
        ("connector", "string"),
        ("name", "string"),
        ("ts_ms", "int64"),
        ("snapshot", "string"),
        ("db", "string"),
        ("schema", "string"),
        ("table", "string"),
        ("txId", "int64"),
        ("lsn", "int64"),
        ("xmin", "int64"),
    ]
]


def envelope_schema(fields: list[dict[str, Any]]) -> dict[str, Any]:
    image = {"type": "struct", "optional": True, "name": "fuzz.public.orders.Value"}
    return {
        "type": "struct",
        "optional": False,
        "name": "fuzz.public.orders.Envelope",
        "fields": [
            {**image, "fields": fields, "field": "before"},
            {**image, "fields": fields, "field": "after"},
            {"type": "struct", "optional": False, "fields": SOURCE_FIELDS, "field": "source"},
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
        ],
    }


GOOD_SCHEMA = envelope_schema(list(ROW_FIELDS.values()))
KEY_SCHEMA = {
    "type": "struct",
    "optional": False,
    "name": "fuzz.public.orders.Key",
    "fields": [ROW_FIELDS["id"]],
}


def wire_row(row: Row) -> dict[str, Any]:
    """The after image of `row` as the JSON converter writes it with schemas."""
    amount = None if row.amount is None else decimal_base64(int(row.amount.scaleb(2)))
    moment = None if row.updated_at is None else zoned(row.updated_at)
    return {
        "id": row.id,
        "status": row.status,
        "amount": amount,
        "note": row.note,
        "updated_at": moment,
    }


def is_invalid_json(data: bytes) -> bool:
    """True when no strict JSON parser could read `data` (two parsers agree)."""
    try:
        json.loads(data.decode("utf-8"), parse_constant=lambda name: 1 / 0)
    except (ValueError, RecursionError, ZeroDivisionError):
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
    return False


@dataclass
class Aim:
    """What one message is built from: its key, the key's good row, its source position."""

    rng: random.Random
    key: int
    other: int  # another good key
    row: Row  # the key's current good row (or one it could have)
    lsn: int
    tx: int
    earlier_tx: int | None  # a txId of an earlier good change of the key


@dataclass
class Generator:
    rng: random.Random
    partitions: int
    keys: list[int]
    rows: dict[int, Row] = field(default_factory=dict)
    txs: dict[int, list[int]] = field(default_factory=dict)
    lsn: int = 100_000
    tx: int = 1_000
    first_key: int | None = None  # the key whose first change has txId 1
    collided_first: bool = False

    def position(self, *, good: bool = False) -> tuple[int, int]:
        self.lsn += self.rng.randrange(8, 72)
        if good and self.first_key is None:
            return self.lsn, 1
        self.tx += 1
        return self.lsn, self.tx

    def partition(self, key: int) -> int:
        return key % self.partitions

    def random_row(self, key: int, *, bare: bool = False) -> Row:
        rng = self.rng
        amount = None
        if not bare and rng.random() < 0.9:
            edge = 10**12 - 1  # numeric(12,2): 9999999999.99
            unscaled = rng.choice([0, edge, -edge, rng.randrange(-edge, edge + 1)])
            amount = Decimal(unscaled).scaleb(-2)
        moment = None
        if not bare and rng.random() < 0.9:
            micros = rng.choice([0, rng.randrange(0, 4_102_444_800 * 10**6)])
            moment = EPOCH + dt.timedelta(microseconds=micros)
        note = rng.choice([None, f"note {rng.randrange(10**6)}", "ü" * rng.randrange(1, 3000)])
        return Row(key, rng.choice(STATUSES), amount, note, moment)

    def source(self, lsn: int, tx: int, override: dict[str, Any]) -> dict[str, Any]:
        """The source block; an override of `...` removes the field."""
        block = {
            "version": "3.5.0.Final",
            "connector": "postgresql",
            "name": "fuzz",
            "ts_ms": BASE_TS_MS + lsn // 8,
            "snapshot": "false",
            "db": "source",
            "schema": "public",
            "table": "orders",
            "txId": tx,
            "lsn": lsn,
            "xmin": None,
        }
        block.update(override)
        return {k: v for k, v in block.items() if v is not Ellipsis}

    def value(
        self,
        op: str,
        after: dict[str, Any] | None,
        aim_or_pos: Aim | tuple[int, int],
        *,
        schema: Any = GOOD_SCHEMA,
        before: dict[str, Any] | None = None,
        ascii_only: bool = False,
        source: dict[str, Any] | None = None,
    ) -> bytes:
        """A Debezium PostgreSQL change event value; without the wrapper when `schema` is
        None."""
        lsn, tx = (aim_or_pos.lsn, aim_or_pos.tx) if isinstance(aim_or_pos, Aim) else aim_or_pos
        payload = {
            "before": before,
            "after": after,
            "source": self.source(lsn, tx, source or {}),
            "op": op,
            "ts_ms": BASE_TS_MS + lsn // 8 + 3,
        }
        data = payload if schema is None else {"schema": schema, "payload": payload}
        return dumps(data, ascii_only=ascii_only)

    def key_bytes(self, key: int) -> bytes:
        if self.rng.random() < 0.3:
            return dumps({"schema": KEY_SCHEMA, "payload": {"id": key}})
        return dumps({"id": key})

    # -- good changes ---------------------------------------------------------------------

    def good(self, key: int, huge: bool = False) -> list[FuzzMessage]:
        """The next good change of `key` (and the tombstone after a delete, mostly)."""
        rng, pos, old = self.rng, self.position(good=True), self.rows.get(key)
        self.txs.setdefault(key, []).append(pos[1])
        if self.first_key is None:
            self.first_key = key
        part, kb = self.partition(key), self.key_bytes(key)
        if old is not None and not huge and rng.random() < 0.15:
            del self.rows[key]
            value = self.value("d", None, pos, schema=None, before={"id": key})
            out = [FuzzMessage("good_delete", APPLY, kb, value, part, key)]
            if rng.random() < 0.7:
                out.append(FuzzMessage("tombstone", SKIP, kb, None, part, key))
            return out
        op = "u" if old is not None else rng.choice("ccccr")
        if huge:
            row = Row(key, "huge", None, "h" * rng.choice(HUGE_SIZES), None)
            family, value = "good_huge_note", self.value(op, wire_row(row), pos)
        elif old is not None and rng.random() < 0.1:  # unchanged TOAST: note not sent
            row = Row(key, rng.choice(STATUSES), old.amount, old.note, old.updated_at)
            after = {**wire_row(row), "note": PLACEHOLDER}
            family, value = "good_toast_update", self.value(op, after, pos)
        elif rng.random() < 0.15:  # schemas.enable=false: no logical types
            row = self.random_row(key, bare=True)
            family, value = "good_bare", self.value(op, wire_row(row), pos, schema=None)
        else:
            row = self.random_row(key)
            family = "good_insert" if op in "cr" else "good_update"
            value = self.value(op, wire_row(row), pos)
        self.rows[key] = row
        return [FuzzMessage(family, APPLY, kb, value, part, key)]

    def aim(self) -> Aim:
        alive = list(self.rows)
        pool = alive if alive and self.rng.random() < 0.8 else self.keys
        key = self.rng.choice(pool)
        other = self.rng.choice([k for k in self.keys if k != key])
        lsn, tx = self.position()
        txs = self.txs.get(key)
        row = self.rows.get(key) or self.random_row(key)
        return Aim(self.rng, key, other, row, lsn, tx, self.rng.choice(txs) if txs else None)


Built = tuple[bytes | None, bytes | None]
Builder = Callable[["Generator", Aim, str], Built]
HOSTILE: dict[str, tuple[float, Builder, str]] = {}
HUGE = 0.06  # about one per thousand hostile messages among ~60 families


def family(
    name: str, weight: float = 1.0, expect: str = QUARANTINE
) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        HOSTILE[name] = (weight, builder, expect)
        return builder

    return register


def hostile_row(aim: Aim, name: str) -> dict[str, Any]:
    """A valid-looking after image whose values say which family wrote it, if applied."""
    return {
        "id": aim.key,
        "status": f"HOSTILE:{name}",
        "amount": decimal_base64(66666),
        "note": f"hostile {name}",
        "updated_at": "2001-02-03T04:05:06Z",
    }


def bare_key(aim: Aim) -> bytes:
    return dumps({"id": aim.key})


def with_row(
    gen: Generator,
    aim: Aim,
    name: str,
    columns: dict[str, Any] | None = None,
    *,
    ascii_only: bool = False,
    op: str = "u",
) -> Built:
    """The key's message with the hostile row, `columns` replaced or added."""
    row = {**hostile_row(aim, name), **(columns or {})}
    return bare_key(aim), gen.value(op, row, aim, ascii_only=ascii_only)


def with_source(gen: Generator, aim: Aim, name: str, **source: Any) -> Built:
    return bare_key(aim), gen.value("u", hostile_row(aim, name), aim, source=source)


def with_schema(gen: Generator, aim: Aim, name: str, amount: dict[str, Any], value: Any) -> Built:
    """The amount column under another Connect schema."""
    fields = {**ROW_FIELDS, "amount": {**ROW_FIELDS["amount"], **amount}}
    fields["amount"] = {k: v for k, v in fields["amount"].items() if v is not None}
    row = {**hostile_row(aim, name), "amount": value}
    return bare_key(aim), gen.value("u", row, aim, schema=envelope_schema(list(fields.values())))


def replaced(gen: Generator, aim: Aim, name: str, column: str, raw: bytes) -> Built:
    """The hostile row with `column`'s JSON value replaced by raw bytes."""
    key, value = with_row(gen, aim, name, {column: "@@RAW@@"})
    assert value is not None
    return key, value.replace(b'"@@RAW@@"', raw, 1)


def pick(aim: Aim, *choices: Any) -> Any:
    return aim.rng.choice(choices)


# -- undecodable bytes ---------------------------------------------------------------------


@family("truncated_json")
def _truncated(gen: Generator, aim: Aim, name: str) -> Built:
    """A proper prefix of a JSON object is never JSON."""
    key, value = with_row(gen, aim, name)
    assert value is not None
    return key, value[: aim.rng.randrange(1, len(value))]


@family("bit_flip")
def _bit_flip(gen: Generator, aim: Aim, name: str) -> Built:
    """One to four flipped bits, kept once no strict JSON parser reads the result."""
    key, value = with_row(gen, aim, name)
    assert value is not None
    for _ in range(200):
        flipped = bytearray(value)
        for _ in range(aim.rng.randrange(1, 5)):
            flipped[aim.rng.randrange(len(flipped))] ^= 1 << aim.rng.randrange(8)
        if is_invalid_json(bytes(flipped)):
            return key, bytes(flipped)
    return key, value[:-1]


@family("invalid_utf8")
def _invalid_utf8(gen: Generator, aim: Aim, name: str) -> Built:
    bad = pick(
        aim, b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80", b"\xe2\x82"
    )  # noqa: E501
    where = pick(aim, "status", "note", "table")
    if where == "table":
        key, value = with_source(gen, aim, name, table="ord@@BAD@@ers")
    else:
        key, value = with_row(gen, aim, name, {where: "x@@BAD@@y"})
    assert value is not None
    return key, value.replace(b"@@BAD@@", bad)


@family("lone_surrogate")
def _lone_surrogate(gen: Generator, aim: Aim, name: str) -> Built:
    text = pick(aim, "\ud800", "a\udfffb", "\udc00\ud800", "x\udbff")
    return with_row(gen, aim, name, {pick(aim, "status", "note"): text}, ascii_only=True)


@family("deep_nesting", weight=0.5)
def _deep_nesting(gen: Generator, aim: Aim, name: str) -> Built:
    depth = pick(aim, 1_000, 10_000, 100_000)
    nested = pick(aim, b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth)
    return replaced(gen, aim, name, pick(aim, "status", "note"), nested)


@family("avro_magic")
def _avro_magic(gen: Generator, aim: Aim, name: str) -> Built:
    """Confluent wire format (magic byte 0, schema id) with no registry configured."""
    schema_id = struct.pack(">I", aim.rng.randrange(1, 2**31))
    return bare_key(aim), b"\x00" + schema_id + aim.rng.randbytes(aim.rng.randrange(4, 200))


@family("not_an_object")
def _not_an_object(gen: Generator, aim: Aim, name: str) -> Built:
    return bare_key(aim), pick(aim, b"[]", b"42", b'"orders"', b"true", b"[1,2]", b"-0.5e3")


@family("empty_value")
def _empty_value(gen: Generator, aim: Aim, name: str) -> Built:
    return bare_key(aim), b""


@family("garbage_binary")
def _garbage(gen: Generator, aim: Aim, name: str) -> Built:
    while True:
        value = bytes([aim.rng.randrange(1, 256)]) + aim.rng.randbytes(aim.rng.randrange(0, 300))
        if is_invalid_json(value):
            return bare_key(aim), value


@family("key_not_json")
def _key_not_json(gen: Generator, aim: Aim, name: str) -> Built:
    _, value = with_row(gen, aim, name)
    return pick(aim, b"\xff{", b"{id:1}", b'{"id":', b"\x00\x00\x00\x01", b""), value


@family("key_not_object")
def _key_not_object(gen: Generator, aim: Aim, name: str) -> Built:
    _, value = with_row(gen, aim, name)
    return pick(aim, b"[1]", str(aim.key).encode(), b'"x"', b"null", b"true"), value


@family("malformed_schema")
def _malformed_schema(gen: Generator, aim: Aim, name: str) -> Built:
    schema = pick(aim, 5, "struct", [], {"type": 3}, {"type": "struct", "fields": "none"})
    return bare_key(aim), gen.value("u", hostile_row(aim, name), aim, schema=schema)


# -- the envelope --------------------------------------------------------------------------


@family("unknown_op")
def _unknown_op(gen: Generator, aim: Aim, name: str) -> Built:
    return with_row(gen, aim, name, op=pick(aim, "x", "C", "", "insert", "m", "cc", "U"))


@family("missing_after")
def _missing_after(gen: Generator, aim: Aim, name: str) -> Built:
    before = pick(aim, None, hostile_row(aim, name))
    return bare_key(aim), gen.value(pick(aim, "c", "u", "r"), None, aim, before=before)


@family("missing_source_fields")
def _missing_source_fields(gen: Generator, aim: Aim, name: str) -> Built:
    drop = pick(aim, "txId", "table", "schema", "lsn", "connector", "ts_ms")
    return with_source(gen, aim, name, **{drop: ...})


@family("unsupported_connector")
def _unsupported_connector(gen: Generator, aim: Aim, name: str) -> Built:
    connector = pick(aim, "oracle", "sqlserver", "mongodb", "PostgreSQL", "", "postgresql ")
    return with_source(gen, aim, name, connector=connector)


@family("mysql_shaped")
def _mysql_shaped(gen: Generator, aim: Aim, name: str) -> Built:
    """A MySQL source whose database is named `public`: not the mapped PostgreSQL table [9]."""
    return with_source(
        gen,
        aim,
        name,
        connector=pick(aim, "mysql", "mariadb"),
        db="public",
        schema=None,
        txId=None,
        lsn=None,
        file="mysql-bin.000003",
        pos=aim.lsn,
        row=0,
    )


@family("plain_format")
def _plain_format(gen: Generator, aim: Aim, name: str) -> Built:
    """The seed's plain format in a Debezium stream: its ms timestamp beats every LSN [9]."""
    operation = pick(aim, "INSERT", "UPDATE", "DELETE")
    data = {"id": aim.key, "status": f"HOSTILE:{name}", "note": "plain"}
    message = {
        "table": SOURCE_TABLE,
        "operation": operation,
        "key": {"id": aim.key},
        "timestamp": BASE_TS_MS + aim.lsn,
        "data": data,
    }
    return bare_key(aim), dumps(message)


@family("unmapped_table")
def _unmapped_table(gen: Generator, aim: Aim, name: str) -> Built:
    schema, table = pick(
        aim,
        ("public", "customers"),
        ("public", "Orders"),
        ("PUBLIC", "orders"),
        ("private", "orders"),
        ("public", "orders "),
        ("public", "orders_x"),
        ("public.orders", "x"),
        ("", "orders"),
    )
    return with_source(gen, aim, name, schema=schema, table=table)


@family("nul_in_name")
def _nul_in_name(gen: Generator, aim: Aim, name: str) -> Built:
    """NUL in the table or schema name [2]."""
    where = pick(aim, {"table": "orders\x00"}, {"schema": "public\x00"}, {"table": "ord\x00ers"})
    return with_source(gen, aim, name, **where)


@family("hostile_table_names")
def _hostile_table_names(gen: Generator, aim: Aim, name: str) -> Built:
    """Quotes, escapes and control characters in a table name: never SQL, never a log line."""
    table = pick(
        aim,
        'orders"; DROP TABLE orders; --',
        "orders'",
        'or"ders',
        "orders\\",
        "orders\x1b[31m",
        "orders\x07",
        "orders\t",
        "ordérs",
        "orders\u202e",
        'orders" CASCADE',
        "orders;",
    )
    return with_source(gen, aim, name, table=table)


@family("log_forge")
def _log_forge(gen: Generator, aim: Aim, name: str) -> Built:
    """A line break, then a fake log line, wherever an error might echo input [10]."""
    text = pick(aim, "\n", "\r\n", "\r", "\u2028") + FORGED
    where = pick(aim, "table-no-key", "table", "column", "key", "value")
    if where == "table-no-key":
        return None, gen.value("c", hostile_row(aim, name), aim, source={"table": "orders" + text})
    if where == "table":
        return with_source(gen, aim, name, table="orders" + text)
    if where == "column":
        return with_row(gen, aim, name, {"note" + text: "x"})
    if where == "key":
        return dumps({"id": f"{aim.key}{text}"}), with_row(gen, aim, name)[1]
    return with_row(gen, aim, name, {"updated_at": "2026-03-01" + text})


@family("hostile_column_names")
def _hostile_column_names(gen: Generator, aim: Aim, name: str) -> Built:
    column = pick(
        aim,
        'sta"tus',
        "note\n",
        "x\x00",
        '"; DROP TABLE x; --',
        "id ",
        "ID",
        "",
        "a\x1b[2J",
        "amount'",
    )
    return with_row(gen, aim, name, {column: "v"})


@family("unknown_column")
def _unknown_column(gen: Generator, aim: Aim, name: str) -> Built:
    return with_row(gen, aim, name, {pick(aim, "discount", "extra", "Status"): 5})


# -- empty images [1] ----------------------------------------------------------------------


@family("empty_after")
def _empty_after(gen: Generator, aim: Aim, name: str) -> Built:
    schema = pick(aim, GOOD_SCHEMA, None)
    return bare_key(aim), gen.value(pick(aim, "c", "u"), {}, aim, schema=schema)


@family("toast_only_after")
def _toast_only(gen: Generator, aim: Aim, name: str) -> Built:
    after = pick(
        aim,
        {"status": PLACEHOLDER, "note": PLACEHOLDER},
        {"note": PLACEHOLDER},
        {"status": PLACEHOLDER, "amount": "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="},
    )
    return bare_key(aim), gen.value(pick(aim, "c", "u"), after, aim)


# -- the message key against the image [3, 4, 7] ------------------------------------------


@family("key_image_other_id")
def _key_image_other_id(gen: Generator, aim: Aim, name: str) -> Built:
    """Key {"id":A}, image id B: another good key, changed in the same batch [3, 7]."""
    return bare_key(aim), gen.value("u", {**hostile_row(aim, name), "id": aim.other}, aim)


def _key(name: str, make: Callable[[Aim], Any]) -> None:
    def build(gen: Generator, aim: Aim, fam: str) -> Built:
        return dumps(make(aim)), with_row(gen, aim, fam)[1]

    build.__doc__ = "A message key that is not the image's key [7]."
    family(name)(build)


_key("key_nul", lambda aim: {"id": f"{aim.key}\x00"})
_key("key_string_id", lambda aim: {"id": str(aim.key)})
_key("key_empty", lambda aim: {})
_key("key_wrong_case", lambda aim: {"ID": aim.key})
_key("key_extra_column", lambda aim: {"id": aim.key, "tenant": 1})
_key("key_float_id", lambda aim: {"id": pick(aim, aim.key + 0.5, float(aim.key))})
_key("key_wrapped_other", lambda aim: {"schema": KEY_SCHEMA, "payload": {"id": aim.other}})


def _long_key(length: int) -> Builder:
    def build(gen: Generator, aim: Aim, name: str) -> Built:
        """A key too long for a btree index entry [4]."""
        text = aim.rng.randbytes(length // 2 + 1).hex()[:length]
        image_id = pick(aim, aim.key, text)
        return dumps({"id": text}), gen.value("u", {**hostile_row(aim, name), "id": image_id}, aim)

    return build


family("long_key_3000")(_long_key(3_000))
family("long_key_10000")(_long_key(10_000))


# -- positions and transactions ------------------------------------------------------------


@family("txid_collision")
def _txid_collision(gen: Generator, aim: Aim, name: str) -> Built:
    """txId of an earlier good change of the key plus 2^32 (4294967297 against 1) [8]."""
    if gen.first_key is not None and not gen.collided_first:
        gen.collided_first = True
        retarget(gen, aim, gen.first_key)
        tx = 1 + 2**32
    elif aim.earlier_tx is not None:
        tx = aim.earlier_tx + 2**32
    else:
        tx = aim.tx + 2**32
    return with_source(gen, aim, name, txId=tx)


@family("txid_negative")
def _txid_negative(gen: Generator, aim: Aim, name: str) -> Built:
    return with_source(gen, aim, name, txId=pick(aim, -5, -1, -(2**31), -(2**63)))


@family("txid_huge")
def _txid_huge(gen: Generator, aim: Aim, name: str) -> Built:
    return with_source(gen, aim, name, txId=pick(aim, 2**64, 2**63, 2**64 + 1, 2**32, 2**33))


@family("lsn_max")
def _lsn_max(gen: Generator, aim: Aim, name: str) -> Built:
    """An LSN of 2^63-1 would freeze its key for good [9]."""
    return with_source(gen, aim, name, lsn=2**63 - 1)


@family("lsn_negative")
def _lsn_negative(gen: Generator, aim: Aim, name: str) -> Built:
    return with_source(gen, aim, name, lsn=pick(aim, -1, -(2**63), -aim.lsn))


@family("lsn_huge")
def _lsn_huge(gen: Generator, aim: Aim, name: str) -> Built:
    return with_source(gen, aim, name, lsn=pick(aim, 2**64, 2**64 + 5, 10**30))


@family("lsn_wrong_type")
def _lsn_wrong_type(gen: Generator, aim: Aim, name: str) -> Built:
    source = pick(
        aim,
        {"lsn": "0/16B3748"},
        {"lsn": 1.5e3},
        {"lsn": True},
        {"lsn": {"a": 1}},
        {"lsn": ..., "sequence": '["a"]'},
        {"lsn": ..., "sequence": "[]"},
        {"lsn": ..., "sequence": "not json"},
        {"lsn": ..., "sequence": '["1",null]'},
    )
    return with_source(gen, aim, name, **source)


@family("source_ts_extreme")
def _source_ts_extreme(gen: Generator, aim: Aim, name: str) -> Built:
    return with_source(gen, aim, name, ts_ms=pick(aim, 10**15, -(10**15), 2**63, 2**64))


# -- values that do not fit their column [9] -----------------------------------------------


def _values(name: str, column: str, *choices: Any) -> None:
    def build(gen: Generator, aim: Aim, fam: str) -> Built:
        return with_row(gen, aim, fam, {column: pick(aim, *choices)})

    build.__doc__ = f"A value for {column} that is not of its type: never coerced [9]."
    family(name)(build)


_values("text_gets_object", "status", {"a": 1}, {})
_values("text_gets_list", "note", [1, 2], ["a"], [])
_values("text_gets_number", "status", 12345, 1.5, -0.0, 1e20)
_values("text_gets_bool", "note", True, False)
_values("nul_in_text", "status", "ab\x00cd", "\x00", "trailing\x00")
_values("decimal_empty_bytes", "amount", "")
_values("decimal_not_base64", "amount", "not base64!!", "Zm9v=", "====", "A")
_values("decimal_json_number", "amount", 12.345, 0.001, 1e-3, 123.456)
_values(
    "numeric_overflow",
    "amount",
    decimal_base64(10**12),
    decimal_base64(10**40),
    decimal_base64(-(10**12)),
)
_values("zoned_date_only", "updated_at", "2026-03-01", "2026-03")
_values("zoned_no_zone", "updated_at", "2026-03-01T12:00:00", "2026-03-01T12:00:00.123456")
_values("zoned_week_date", "updated_at", "2026-W09-7T12:00:00Z", "2026-W09-7", "2026-060")
_values("zoned_trailing_nul", "updated_at", "2026-03-01T12:00:00Z\x00")
_values(
    "zoned_extreme",
    "updated_at",
    "9999-12-31T23:59:59.999999-14:00",
    "0001-01-01T00:00:00+14:00",
    "+10000-01-01T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "infinity",
    "2026-02-30T00:00:00Z",
    "2026-03-01T24:00:00Z",
    "2026-03-01T12:00:60Z",
)
_values("zoned_not_string", "updated_at", 1_700_000_000_000, True, {"t": 1})


@family("id_wrong_type")
def _id_wrong_type(gen: Generator, aim: Aim, name: str) -> Built:
    """Key {"id":N}, image id "N" or N.0: not a bigint (and not the key) [7, 9]."""
    return with_row(gen, aim, name, {"id": pick(aim, str(aim.key), float(aim.key), aim.key + 0.5)})


@family("bigint_overflow")
def _bigint_overflow(gen: Generator, aim: Aim, name: str) -> Built:
    big = pick(aim, 2**63, -(2**63) - 1, 10**30, 2**64)
    return dumps({"id": big}), gen.value("u", {**hostile_row(aim, name), "id": big}, aim)


@family("decimal_no_scale")
def _decimal_no_scale(gen: Generator, aim: Aim, name: str) -> Built:
    """A Connect Decimal without its scale parameter: 100x too large if taken as 0 [9]."""
    return with_schema(gen, aim, name, {"parameters": None}, decimal_base64(1000))


@family("decimal_bad_scale")
def _decimal_bad_scale(gen: Generator, aim: Aim, name: str) -> Built:
    """Scales whose value cannot be numeric(12,2) exactly, or no scale at all [9]."""
    scale, unscaled = pick(
        aim, ("-2", 10**9 + 7), ("5", 12345), ("99999", 1), ("3", 1001), ("abc", 100), ("2.5", 100)
    )
    parameters = {"scale": scale, "connect.decimal.precision": "12"}
    return with_schema(gen, aim, name, {"parameters": parameters}, decimal_base64(unscaled))


@family("json_number_out_of_range")
def _json_number_out_of_range(gen: Generator, aim: Aim, name: str) -> Built:
    raw = pick(aim, b"1e400", b"-1e400", b"1" + b"0" * 400)
    return replaced(gen, aim, name, pick(aim, "amount", "status", "id"), raw)


# -- size [5] ------------------------------------------------------------------------------


@family("huge_garbage", weight=HUGE)
def _huge_garbage(gen: Generator, aim: Aim, name: str) -> Built:
    """1-2 MB that is not JSON (an unterminated string): its dead letter is as large [5]."""
    head = b'{"op":"c","after":{"id":%d,"note":"' % aim.key
    return bare_key(aim), head + b"A" * (pick(aim, *HUGE_SIZES) - len(head))


@family("huge_nul_note", weight=HUGE)
def _huge_nul_note(gen: Generator, aim: Aim, name: str) -> Built:
    """A 1-2 MB note ending in NUL: decodable, then rejected [5]."""
    return with_row(gen, aim, name, {"note": "n" * (pick(aim, *HUGE_SIZES) - 1200) + "\x00"})


# -- skips ---------------------------------------------------------------------------------


@family("wrapped_tombstone", weight=0.5, expect=SKIP)
def _wrapped_tombstone(gen: Generator, aim: Aim, name: str) -> Built:
    """A null payload under the schema wrapper: a tombstone, a counted skip."""
    return bare_key(aim), b'{"schema":null,"payload":null}'


def retarget(gen: Generator, aim: Aim, key: int) -> None:
    """Aim at `key` instead (its partition follows)."""
    aim.key = key
    aim.row = gen.rows.get(key) or gen.random_row(key)
    txs = gen.txs.get(key)
    aim.earlier_tx = aim.rng.choice(txs) if txs else None


def allocate(total: int, weights: dict[str, float], minimum: int) -> dict[str, int]:
    """Counts per family in proportion to `weights`, at least `minimum` each, summing to
    `total` (or more, when `total` is below the minimums)."""
    scale = sum(weights.values())
    counts = {name: max(minimum, round(total * w / scale)) for name, w in weights.items()}
    order = sorted(weights, key=lambda name: -weights[name])
    i = 0
    while sum(counts.values()) != total and i < 10 * total:
        name = order[i % len(order)]
        step = 1 if sum(counts.values()) < total else -1
        if counts[name] + step >= minimum:
            counts[name] += step
        i += 1
    return counts


def generate(
    *,
    seed: int,
    good: int,
    hostile: int,
    partitions: int = 4,
    keys: int = 200,
    minimum: int = 1,
    only: Collection[str] = (),
) -> Batch:
    """`good` good changes (plus tombstones) and `hostile` hostile messages, interleaved;
    the hostile ones of the families in `only` when given."""
    unknown = set(only) - set(HOSTILE)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; known: {sorted(HOSTILE)}")
    rng = random.Random(seed)
    gen = Generator(rng, partitions, list(range(1, keys + 1)) + list(EDGE_KEYS))
    weights = {
        name: weight
        for name, (weight, _builder, _expect) in HOSTILE.items()
        if not only or name in only
    }
    counts = allocate(hostile, weights, minimum)
    huge_good = max(1, good // 1000)
    slots = ["good"] * (good - huge_good) + ["good_huge"] * huge_good
    for name, count in counts.items():
        slots += [name] * count
    rng.shuffle(slots)
    messages: list[FuzzMessage] = []
    for slot in slots:
        if slot.startswith("good"):
            messages += gen.good(rng.choice(gen.keys), huge=slot == "good_huge")
            continue
        _weight, build, expect = HOSTILE[slot]
        aim = gen.aim()
        key, value = build(gen, aim, slot)
        messages.append(FuzzMessage(slot, expect, key, value, gen.partition(aim.key), aim.key))
    families = {
        "good_insert": APPLY,
        "good_update": APPLY,
        "good_delete": APPLY,
        "good_toast_update": APPLY,
        "good_bare": APPLY,
        "good_huge_note": APPLY,
        "tombstone": SKIP,
    }
    families.update({name: expect for name, (_weight, _build, expect) in HOSTILE.items()})
    families.update({m.family: m.expect for m in messages})
    return Batch(messages, dict(gen.rows), families)
