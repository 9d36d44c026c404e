"""Is the Kafka cluster answering? One long-lived admin client asked for metadata.

The service's consumer does not say when every broker is gone (librdkafka keeps
retrying), so readiness asks the cluster itself, on the status thread.

    >>> probe = ClusterProbe("127.0.0.1:19092")   # doctest: +SKIP
    >>> probe.check(timeout=2.0)                   # doctest: +SKIP
"""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from cdc_recon.exceptions import KafkaUnavailable
from cdc_recon.kafka.admin import client_config


class ClusterProbe:
    def __init__(self, bootstrap: str, extra: dict[str, str] | None = None) -> None:
        self._bootstrap = bootstrap
        self._admin = AdminClient(client_config(bootstrap, extra))

    def check(self, timeout: float = 2.0) -> int:
        """The number of brokers; `KafkaUnavailable` when the cluster does not answer."""
        try:
            metadata = self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"cannot reach Kafka at {self._bootstrap}: {exc.args[0]}"
            ) from exc
        return len(metadata.brokers)
