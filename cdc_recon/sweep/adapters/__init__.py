"""Source change-log adapters: what the source changed, for the sweeper to check.

    pg_trigger   a change-log table in the source fed by row triggers (`source install`)
    debezium_tx  Debezium's transaction metadata topic (event counts per transaction)
    kafka_topic  the CDC topics themselves (skipped and quarantined messages)
    mariadb_trigger  a change-log table in a MariaDB source fed by row triggers, matched
                 by count per (table, key, op, second)

`open_adapter(settings)` builds the one `sweeper.adapter` names.
"""

from __future__ import annotations

from cdc_recon.config import Settings
from cdc_recon.sweep.adapters.base import ChangeSource, Classified, Window

__all__ = ["ChangeSource", "Classified", "Window", "open_adapter"]


def open_adapter(settings: Settings) -> ChangeSource:
    """The configured adapter; close it when done."""
    adapter = settings.sweeper.adapter
    if adapter == "pg_trigger":
        from cdc_recon.sweep.adapters.pg_trigger import PgTriggerLog

        return PgTriggerLog(settings)
    if adapter == "mariadb_trigger":
        from cdc_recon.sweep.adapters.mariadb_trigger import MariaDbTriggerLog

        return MariaDbTriggerLog(settings)
    if adapter == "debezium_tx":
        from cdc_recon.sweep.adapters.debezium_tx import DebeziumTransactions

        return DebeziumTransactions(settings)
    from cdc_recon.sweep.adapters.kafka_topic import KafkaTopics

    return KafkaTopics(settings)
