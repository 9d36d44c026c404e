"""`cdc-recon doctor`: prove the configured services answer, one line per check."""

from __future__ import annotations

from rich.console import Console

from cdc_recon.config import Settings
from cdc_recon.kafka.admin import describe_cluster, round_trip
from cdc_recon.pg.engine import check_connection, create_engine, probe_transaction


def run_checks(settings: Settings, console: Console | None = None) -> None:
    """Kafka metadata and a produce/consume round trip, then a transaction on each database.

    Raises the first `ConnectionFailed` it meets; prints a line per passed check.
    """
    out = console or Console()
    info = describe_cluster(settings.kafka_bootstrap)
    out.print(
        f"[green]ok[/] kafka {settings.kafka_bootstrap}: cluster {info.cluster_id}, "
        f"{info.brokers} broker(s), {info.topics} topic(s)"
    )
    seconds = round_trip(settings.kafka_bootstrap)
    out.print(f"[green]ok[/] kafka round trip through a consumer group in {seconds * 1000:.0f} ms")
    databases = [("target", settings.target_url)]
    if settings.source_url is not None:
        databases.insert(0, ("source", settings.source_url))
    for name, url in databases:
        engine = create_engine(url, name=name)
        try:
            check_connection(engine, name=name)
            version, wal, elapsed = probe_transaction(engine)
            out.print(
                f"[green]ok[/] {name} database: PostgreSQL {version}, wal_level={wal}, "
                f"transaction in {elapsed:.0f} ms"
            )
        finally:
            engine.dispose()
