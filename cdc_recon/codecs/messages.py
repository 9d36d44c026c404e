"""From a Kafka message to a `Decoded` event or a quarantine record."""

from __future__ import annotations

import logging

from cdc_recon.batch import Decoded, Failure, FailureReason, Message
from cdc_recon.codecs import AvroDecoder, decode
from cdc_recon.exceptions import ConnectionFailed, DecodeError

LOG = logging.getLogger("cdc_recon.codecs")


def decode_message(message: Message, fmt: str, avro: AvroDecoder | None) -> Decoded | Failure:
    """The message's event, or its quarantine record; never raises for bad input.

    `ConnectionFailed` (a schema registry that does not answer) is not bad input and
    propagates, so the batch is retried instead of quarantined.
    """
    try:
        return Decoded(message, decode(message.key, message.value, fmt=fmt, avro=avro))
    except DecodeError as exc:
        return Failure(message, FailureReason.UNDECODABLE, str(exc))
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
        return Failure(message, FailureReason.UNDECODABLE, f"{type(exc).__name__}: {exc}")
