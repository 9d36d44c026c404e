"""Decoding Kafka messages into `ChangeEvent`s: Debezium JSON and Avro, and the plain format.

Pure functions: nothing here talks to Kafka or a database (the Avro decoder asks its
schema registry for a writer schema once per id). Every undecodable message raises
`cdc_recon.exceptions.DecodeError` with the reason, for the quarantine.

    >>> from cdc_recon.codecs import decode
    >>> event = decode(b'{"id": 1}', message_value)  # doctest: +SKIP
    >>> decode(b'{"id": 1}', None) is None  # a tombstone: nothing to apply
    True
"""

from __future__ import annotations

from cdc_recon.codecs.avro import AvroDecoder, encode_change_event
from cdc_recon.codecs.debezium import decode_debezium, decode_key, read_value, to_event
from cdc_recon.codecs.plain import decode_plain
from cdc_recon.events import ChangeEvent
from cdc_recon.exceptions import ConfigError, DecodeError

FORMATS = ("auto", "debezium", "plain", "avro")

__all__ = [
    "FORMATS",
    "AvroDecoder",
    "decode",
    "decode_debezium",
    "decode_plain",
    "encode_change_event",
]


def decode(
    key: bytes | None,
    value: bytes | None,
    *,
    fmt: str = "auto",
    avro: AvroDecoder | None = None,
) -> ChangeEvent | None:
    """Decode one Kafka message into a `ChangeEvent`.

    `fmt` is `auto`, `debezium`, `plain` or `avro`. `auto` reads a value starting with
    byte 0 as Avro (needs `avro`), a JSON object with `payload`, or `op` and `source`, as
    Debezium, and one with `operation` as the plain format. Returns None only for a
    Debezium tombstone (a null value after a delete, kept for log compaction: the delete
    before it is the change). Raises `DecodeError` for anything it cannot decode, and
    `ConnectionFailed` when the schema registry cannot be reached: then the message is not
    at fault and must not be quarantined.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown message format {fmt!r}; expected one of {FORMATS}", key="fmt")
    if fmt == "plain":
        return decode_plain(value)
    if value is None:
        return None
    if fmt == "avro" or (fmt == "auto" and value[:1] == b"\x00"):
        if avro is None:
            raise DecodeError("an Avro wire-format message, but no AvroDecoder is configured")
        return avro.decode(key, value)
    if fmt == "debezium":
        return decode_debezium(key, value)
    read = read_value(value)
    if read is not None:
        envelope, convert_after = read
        return None if envelope is None else to_event(envelope, decode_key(key), convert_after)
    try:
        return decode_plain(value)
    except DecodeError as exc:
        raise DecodeError(
            "JSON message is neither a Debezium envelope (payload, or op and source)"
            f" nor a plain-format change (operation): {exc}"
        ) from exc
