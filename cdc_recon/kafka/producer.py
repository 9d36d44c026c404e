"""The dead-letter producer: quarantined messages, raw, with why and where they came from.

Each `Failure` becomes one message on `settings.dead_letter_topic` with the original raw
key and value and these headers (UTF-8 text):

    cdc_recon.reason     undecodable | unmapped | rejected
    cdc_recon.detail     the error, for a human
    cdc_recon.topic      where the message was read
    cdc_recon.partition
    cdc_recon.offset

The service sends a batch's failures after the target transaction (which already stored
them in the `failures` table) and before the Kafka commit, then calls `flush()`. Delivery
is at-least-once: a failed flush re-queues what was not delivered on the next `flush()`,
so a consumer of the dead-letter topic deduplicates by the coordinate headers.

    >>> producer = DeadLetterProducer(settings)  # doctest: +SKIP
    >>> producer.send(result.failures)          # doctest: +SKIP
    >>> producer.flush(30.0)                    # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from cdc_recon.batch import Failure
from cdc_recon.config import Settings
from cdc_recon.exceptions import KafkaUnavailable
from cdc_recon.kafka.admin import client_config

LOG = logging.getLogger("cdc_recon.dead_letter")
HEADER_PREFIX = "cdc_recon."
MAX_DETAIL = 4096


def headers(failure: Failure) -> list[tuple[str, str | bytes | None]]:
    """The dead-letter headers of `failure` (see the module docstring)."""
    message = failure.message
    values = {
        "reason": failure.reason,
        "detail": failure.detail[:MAX_DETAIL],
        "topic": message.topic,
        "partition": str(message.partition),
        "offset": str(message.offset),
    }
    return [(HEADER_PREFIX + name, value.encode()) for name, value in values.items()]


class DeadLetterProducer:
    """Writes failures to the dead-letter topic; `flush()` says whether all arrived."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.dead_letter_topic
        config = {
            **client_config(settings.kafka_bootstrap, settings.kafka),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
        }
        self._producer = Producer(config)
        self._in_flight = 0
        self._undelivered: list[tuple[Failure, KafkaError]] = []

    def send(self, failures: Sequence[Failure]) -> None:
        """Queue each failure's raw message; delivery is confirmed by `flush()`."""
        for failure in failures:
            self._produce(failure)

    def _produce(self, failure: Failure) -> None:
        def delivered(error: KafkaError | None, _msg: Any) -> None:
            self._in_flight -= 1
            if error is not None:
                self._undelivered.append((failure, error))

        while True:
            try:
                self._producer.produce(
                    self.topic,
                    key=failure.message.key,
                    value=failure.message.value,
                    headers=headers(failure),
                    on_delivery=delivered,
                )
                self._in_flight += 1
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise KafkaUnavailable(
                    f"cannot queue a dead-letter message for {self.topic}: {exc.args[0]}"
                ) from exc

    def flush(self, timeout: float) -> None:
        """Wait for every queued message; `KafkaUnavailable` if any was not delivered.

        Messages whose delivery failed are queued again by the next `flush()`, so the
        caller retries by calling `flush()` again.
        """
        retry, self._undelivered = self._undelivered, []
        for failure, _ in retry:
            self._produce(failure)
        self._producer.flush(timeout)
        if self._in_flight > 0:
            raise KafkaUnavailable(
                f"{self._in_flight} dead-letter message(s) not delivered to {self.topic} "
                f"within {timeout:g}s"
            )
        if self._undelivered:
            failure, error = self._undelivered[0]
            where = f"{failure.message.topic}[{failure.message.partition}]@"
            raise KafkaUnavailable(
                f"{len(self._undelivered)} dead-letter message(s) not delivered to "
                f"{self.topic}, e.g. {where}{failure.message.offset}: {error.str()}"
            )

    @property
    def pending(self) -> int:
        """Messages queued or failed and not yet delivered."""
        return self._in_flight + len(self._undelivered)

    def close(self, timeout: float = 5.0) -> None:
        """Give queued messages `timeout` seconds; log what is left (it is in `failures`)."""
        self._producer.flush(timeout)
        if self.pending:
            LOG.error(
                "%d dead-letter message(s) for %s were not delivered; they remain in the "
                "failures table",
                self.pending,
                self.topic,
            )
