"""The composition root of `cdc-recon run`: the consume loop and what runs beside it.

`run_service` checks that the target and Kafka answer and the control tables are there,
then starts, each on its own thread with its own connections:

- the consume loop (`cdc_recon.apply.service.Service`, on the calling thread), which knows
  nothing of the others;
- the window sweeper (`cdc_recon.sweep.sweeper.SweeperThread`) when `sweeper.enabled`;
- the scheduled reconciliation jobs (`cdc_recon.reconcile.scheduler`) when
  `reconcile.schedule.enabled`;
- the pruner of the control tables (`cdc_recon.retention.pruner.PrunerThread`) when
  `retention.enabled`;
- the monitoring HTTP server (`cdc_recon.monitor.server`) when `monitoring.enabled`;
- the ledger's partition maintenance (`LedgerMaintainer`, below), every `ledger.interval`.

SIGTERM/SIGINT ask the loop to finish its batch; when it returns the others are stopped
and the connections closed. Errors of the threads beside the loop are logged, never
raised here.

    >>> stats = run_service(load_settings("cdc-recon.yml"), until_idle=5)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from cdc_recon.apply.applier import Applier
from cdc_recon.apply.dead_letters import DeadLetterJournal
from cdc_recon.apply.ledger import maintain_ledger
from cdc_recon.apply.metrics import ServiceMonitor
from cdc_recon.apply.progress import ServiceStats
from cdc_recon.apply.service import Service
from cdc_recon.apply.status import require_control_tables
from cdc_recon.codecs import AvroDecoder
from cdc_recon.config import Settings
from cdc_recon.exceptions import ConfigError
from cdc_recon.kafka.admin import describe_cluster
from cdc_recon.kafka.consumer import GroupConsumer, schema_registry_client
from cdc_recon.kafka.producer import DeadLetterProducer, size_dead_letter_topic
from cdc_recon.monitor.server import serve_monitoring
from cdc_recon.pg.engine import check_connection, create_engine
from cdc_recon.reconcile.scheduler import ReconcileScheduler
from cdc_recon.retention.metrics import observed_prunes
from cdc_recon.retention.pruner import PrunerThread, prune_once
from cdc_recon.sweep.metrics import observed_sweeps
from cdc_recon.sweep.sweeper import SweeperThread, sweep_once

LOG = logging.getLogger("cdc_recon.service")  # the loop's log: its stop belongs there


@contextlib.contextmanager
def _stop_on_signals(service: Service) -> Iterator[None]:
    """SIGTERM and SIGINT ask `service` to stop after its batch; old handlers come back."""

    def handler(signum: int, _frame: Any) -> None:
        LOG.info("%s: finishing the current batch, then stopping", signal.Signals(signum).name)
        service.stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _start_sweeper(settings: Settings) -> SweeperThread | None:
    """The window sweeper beside the loop when `sweeper.enabled`: its own thread and
    connections; its errors are logged, never raised here."""
    if not settings.sweeper.enabled:
        return None
    sweeper = SweeperThread(settings, sweep=observed_sweeps(sweep_once))
    sweeper.start()
    return sweeper


def _start_pruner(settings: Settings) -> PrunerThread | None:
    """The control tables' pruner beside the loop when `retention.enabled` (one instance
    prunes at a time, under a lock): its own thread and connections; its errors are
    logged, never raised here."""
    if not settings.retention.enabled:
        return None
    pruner = PrunerThread(settings, prune=observed_prunes(prune_once))
    pruner.start()
    return pruner


class LedgerMaintainer(threading.Thread):
    """Runs `maintain_ledger` at start and every `ledger.interval`: partitions created
    ahead, expired swept ones dropped. Errors are logged and retried, never raised here.

    A thread of its own beside the pruner (`cdc_recon.retention`): partitions must be
    made ahead from the start and at their own interval, not the pruner's hourly round;
    `maintain_ledger` could join the pruner as a `FunctionTask` for the drops.
    """

    def __init__(self, settings: Settings, engine: sa.Engine) -> None:
        super().__init__(name="cdcr-ledger", daemon=True)
        self.settings = settings
        self.engine = engine
        self._stopping = threading.Event()
        self.runs = 0

    def run(self) -> None:
        while True:
            try:
                done = maintain_ledger(self.engine, self.settings, dt.datetime.now(dt.UTC))
                self.runs += 1
                if done.created or done.dropped or done.waiting:
                    LOG.info("ledger maintenance: %s", done.summary())
            except Exception as exc:  # maintenance must never take the service down
                LOG.warning("ledger maintenance failed, retrying later: %s", exc, exc_info=True)
            if self._stopping.wait(self.settings.ledger.interval):
                return

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)


def _start_reconcile_jobs(settings: Settings) -> ReconcileScheduler | None:
    """Scheduled reconciliation (`reconcile.schedule.enabled`) beside the loop: its own
    thread and connections; its errors are logged, never raised here."""
    if not settings.reconcile.schedule.enabled:
        return None
    scheduler = ReconcileScheduler(settings)
    scheduler.start()
    return scheduler


def run_service(settings: Settings, *, until_idle: float | None = None) -> ServiceStats:
    """Run one group member until SIGTERM/SIGINT (or idle); the `cdc-recon run` command.

    Raises `ConfigError`, `DatabaseUnavailable` or `KafkaUnavailable` when it cannot start.
    """
    if not settings.topics:
        raise ConfigError("config: topics: no topics to consume", key="topics")
    engine = create_engine(settings.target_url, name="target")
    try:
        check_connection(engine, name="target")
        require_control_tables(engine, settings.control_schema)
        describe_cluster(settings.kafka_bootstrap)
        applier = Applier(engine, settings)
        applier.prepare()
        registry = settings.schema_registry_url
        avro = AvroDecoder(schema_registry_client(registry)) if registry else None
        producer = DeadLetterProducer(
            settings,
            size_dead_letter_topic(settings),
            journal=DeadLetterJournal(engine, settings.control_schema),
        )
        try:
            monitor = ServiceMonitor()
            consumer = GroupConsumer(settings)
            service = Service(settings, applier, consumer, producer, avro=avro, monitor=monitor)
            sweeper = _start_sweeper(settings)
            jobs = _start_reconcile_jobs(settings)
            pruner = _start_pruner(settings)
            ledger = LedgerMaintainer(settings, engine)
            ledger.start()
            try:
                with _stop_on_signals(service), serve_monitoring(settings, monitor):
                    service.send_pending_dead_letters()
                    return service.run(until_idle)
            finally:
                for thread in (sweeper, jobs, pruner, ledger):
                    if thread is not None:
                        thread.stop()
        finally:
            producer.close()
            applier.close()
    finally:
        engine.dispose()
