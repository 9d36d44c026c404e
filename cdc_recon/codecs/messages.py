"""From Kafka messages to `Decoded` events or quarantine records."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

from cdc_recon.batch import Decoded, Failure, FailureReason, Message
from cdc_recon.codecs import AvroDecoder, decode, decode_debezium
from cdc_recon.events import ChangeEvent
from cdc_recon.exceptions import ConnectionFailed, DecodeError

LOG = logging.getLogger("cdc_recon.codecs")

Decoder = Callable[[bytes | None, bytes | None], ChangeEvent | None]


def decoder_for(fmt: str, avro: AvroDecoder | None) -> Decoder:
    """The codec for `fmt`, chosen once per batch rather than once per message."""
    if fmt == "debezium":
        return decode_debezium
    return functools.partial(decode, fmt=fmt, avro=avro)


def decode_batch(
    messages: Sequence[Message], fmt: str, avro: AvroDecoder | None
) -> list[Decoded | Failure]:
    """Each message's event, or its quarantine record; never raises for bad input.

    `ConnectionFailed` (a schema registry that does not answer) is not bad input and
    propagates, so the batch is retried instead of quarantined.
    """
    decode_one = decoder_for(fmt, avro)
    items: list[Decoded | Failure] = []
    for message in messages:
        try:
            items.append(Decoded(message, decode_one(message.key, message.value)))
        except DecodeError as exc:
            items.append(Failure(message, FailureReason.UNDECODABLE, str(exc)))
        except ConnectionFailed:
            raise
        except Exception as exc:  # a codec bug must not turn one message into a crash loop
            LOG.debug(
                "codec raised on %s[%s]@%s",
                message.topic,
                message.partition,
                message.offset,
                exc_info=True,
            )
            detail = f"{type(exc).__name__}: {exc}"
            items.append(Failure(message, FailureReason.UNDECODABLE, detail))
    return items


def decode_message(message: Message, fmt: str, avro: AvroDecoder | None) -> Decoded | Failure:
    """One message's event, or its quarantine record (see `decode_batch`)."""
    return decode_batch([message], fmt, avro)[0]
