"""One real CDC pipeline per test: PostgreSQL → Debezium → Kafka → cdc-recon → PostgreSQL.

`Pipeline` makes, for one test: the workload's five tables in a fresh source schema with
the trigger change log installed (the independent record of every source change), the
same tables plus cdc-recon's control tables in a fresh target schema, the five Debezium
topics and a dead-letter topic, a Debezium connector of its own (own name, topic prefix,
replication slot and publication, registered with `scripts/stack connector register`),
and the cdc-recon config mapping the tables. `close()` deletes the connector (dropping
its slot and publication) and the topics.

The checks the tests share:
- `diff()`: every target table against its source table, row for row (`compare.py`);
- `exactly_once()`: the ledger's change ids are exactly the change log's: nothing lost,
  nothing applied twice (the ledger's key is the change id, so a second application
  would have had to be a second id);
- `published()` / `caught_up()`: what Debezium wrote, and whether the group read it all.

Every wait goes through `wait()`: on a timeout it prints which stage stalled and what
each stage holds (`stages.StageReport`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cdc_recon.config import Settings, load_settings
from cdc_recon.control_schema import init_control_schema
from cdc_recon.events import TXID_MASK
from cdc_recon.sweep.adapters.pg_trigger import PgTriggerLog
from cdc_recon.workload import TABLES, create_tables, include_list, table_mappings, topic_names
from tests.conftest import Database
from tests.e2e.compare import SchemaDiff, compare_schemas
from tests.e2e.processes import ServiceProcess, Stack, WorkloadThread, wait_until
from tests.e2e.stages import StageReport

KAFKA_LOG = logging.getLogger("tests.e2e.kafka")


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    source_url: str
    target_url: str


class Pipeline:
    """See the module docstring."""

    def __init__(
        self,
        stack: Stack,
        endpoints: Endpoints,
        source: Database,
        target: Database,
        tmp_path: Path,
        *,
        partitions: int = 2,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.stack, self.endpoints = stack, endpoints
        self.source, self.target = source, target
        self.partitions = partitions
        self.name = f"e2e-{uuid.uuid4().hex[:8]}"
        self.topics = topic_names(self.name, source.schema)
        self.dead_letter_topic = f"{self.name}.dead-letter"
        self.services: list[ServiceProcess] = []
        self.extra_logs: dict[str, Path] = {}  # other logs a stage report should show
        self.registered = False
        self.config = self._config()
        self._merge(overrides or {})
        self.path = tmp_path / "cdc-recon.yml"
        self._admin = AdminClient(self.client_config())
        self._consumer: Consumer | None = None

    def setup(self) -> Pipeline:
        """Tables, change log, topics, config file, then the connector, streaming."""
        for db in (self.source, self.target):
            create_tables(db.engine, db.schema)
        init_control_schema(self.target.engine, self.target.schema)
        self._create_topics(self.partitions)
        self.path.write_text(yaml.safe_dump(self.config, allow_unicode=True))
        log = PgTriggerLog(self.settings())
        try:
            log.install([f"{self.source.schema}.{table.name}" for table in TABLES])
        finally:
            log.close()
        self.registered = True
        self.stack.run(
            "connector",
            "register",
            self.name,
            f"table.include.list={include_list(self.source.schema)}",
            f"topic.prefix={self.name}",
            "--wait",
            "90",
        )
        return self

    def _create_topics(self, partitions: int) -> None:
        wanted = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in self.topics]
        wanted.append(NewTopic(self.dead_letter_topic, num_partitions=1, replication_factor=1))
        for future in self._admin.create_topics(wanted).values():
            future.result(timeout=30)

    def _config(self) -> dict[str, Any]:
        source, target = self.source.schema, self.target.schema
        return {
            "kafka_bootstrap": self.endpoints.kafka_bootstrap,
            "source_url": self.endpoints.source_url,
            "target_url": self.endpoints.target_url,
            "group_id": self.name,
            "topics": self.topics,
            "dead_letter_topic": self.dead_letter_topic,
            "control_schema": target,
            "kafka": {"heartbeat.interval.ms": "500", "session.timeout.ms": "6000"},
            "service": {
                "batch_size": 1000,
                "poll_timeout": 0.2,
                "retry_initial": 0.1,
                "retry_max": 1.0,
            },
            "sweeper": {"changelog_schema": source, "grace": 0},
            "tables": table_mappings(source, target),
        }

    def _merge(self, overrides: dict[str, Any]) -> None:
        for name, value in overrides.items():  # a section is merged, not replaced
            merge = isinstance(value, dict) and isinstance(self.config.get(name), dict)
            self.config[name] = {**self.config[name], **value} if merge else value

    def reconfigure(self, **sections: Any) -> None:
        """Merges `sections` into the config file, for the processes started after."""
        self._merge(sections)
        self.path.write_text(yaml.safe_dump(self.config, allow_unicode=True))

    def client_config(self, **extra: str) -> dict[str, Any]:
        """librdkafka settings; its complaints (a stopped broker) go to logging, not stderr."""
        return {"bootstrap.servers": self.endpoints.kafka_bootstrap, "logger": KAFKA_LOG, **extra}

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(None, **{**self.config, **overrides})

    # -- running ------------------------------------------------------------------------

    def start_service(self, **env: str) -> ServiceProcess:
        """`cdc-recon run` against this pipeline; returns once it owns its partitions."""
        where = {
            "CDC_RECON_KAFKA_BOOTSTRAP": self.endpoints.kafka_bootstrap,
            "CDC_RECON_SOURCE_URL": self.endpoints.source_url,
            "CDC_RECON_TARGET_URL": self.endpoints.target_url,
        }  # the environment would override the config file's
        service = ServiceProcess.start(self.path, {**where, **env})
        self.services.append(service)
        self.wait(
            lambda: "assigned" in service.stderr or not service.alive(),
            "the service to join its group",
            60,
        )
        assert service.alive(), f"cdc-recon exited:\n{service.stderr[-3000:]}"
        return service

    def wait(
        self, condition: Callable[[], Any], what: str, timeout: float, interval: float = 0.2
    ) -> Any:
        """`wait_until` with this pipeline's stage report on a timeout: the one wait of
        the end-to-end tests (and of bench/chaos.py)."""
        return wait_until(condition, what, timeout, interval, explain=self.stage_report)

    def stage_report(self) -> str:
        return StageReport.collect(self).text()

    def workload(self, count: int, rate: float, seed: int, mix: str = "") -> WorkloadThread:
        return WorkloadThread(self.source.engine, self.source.schema, count, rate, seed, mix)

    # -- what the databases say ---------------------------------------------------------

    def scalar(self, db: Database, sql: str) -> Any:
        with db.engine.connect() as conn:
            return conn.execute(sa.text(sql.format(s=f'"{db.schema}"'))).scalar()

    def ledger_count(self) -> int:
        return int(self.scalar(self.target, "SELECT count(*) FROM {s}.ledger"))

    def changelog_count(self) -> int:
        return int(self.scalar(self.source, "SELECT count(*) FROM {s}.changes"))

    def changelog_deletes(self) -> int:
        return int(self.scalar(self.source, "SELECT count(*) FROM {s}.changes WHERE op = 'd'"))

    def ledger_ids(self) -> list[str]:
        with self.target.engine.connect() as conn:
            sql = f'SELECT change_id FROM "{self.target.schema}".ledger'
            return [row[0] for row in conn.execute(sa.text(sql))]

    def changelog_ids(self) -> list[str]:
        sql = (
            f"SELECT source_table || ':' || key_text || ':' || (txid & {TXID_MASK})::text "
            f'FROM "{self.source.schema}".changes'
        )
        with self.source.engine.connect() as conn:
            return [row[0] for row in conn.execute(sa.text(sql))]

    def failures(self) -> list[tuple[str, int, int, str]]:
        sql = (
            "SELECT topic, kafka_partition, kafka_offset, reason "
            f'FROM "{self.target.schema}".failures ORDER BY topic, kafka_partition, kafka_offset'
        )
        with self.target.engine.connect() as conn:
            return [(r[0], r[1], r[2], r[3]) for r in conn.execute(sa.text(sql))]

    def stored_offsets(self) -> dict[tuple[str, int], int]:
        sql = (
            f'SELECT topic, kafka_partition, next_offset FROM "{self.target.schema}".offsets '
            "WHERE group_id = :g"
        )
        with self.target.engine.connect() as conn:
            rows = conn.execute(sa.text(sql), {"g": self.name})
            return {(t, p): o for t, p, o in rows}

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """The group's offsets committed to Kafka (a copy of the stored ones, for lag tools)."""
        request = ConsumerGroupTopicPartitions(self.name)
        admin = AdminClient(self.client_config())  # a fresh one: across a broker restart
        future = admin.list_consumer_group_offsets([request], request_timeout=10)
        found = future[self.name].result(timeout=15)
        return {
            (tp.topic, tp.partition): tp.offset for tp in found.topic_partitions if tp.offset >= 0
        }

    def connector_status(self) -> str:
        return self.stack.run("connector", "status", self.name, check=False, timeout=30)

    def diff(self) -> SchemaDiff:
        pairs = [
            (f"{self.source.schema}.{t.name}", f"{self.target.schema}.{t.name}") for t in TABLES
        ]
        return compare_schemas(self.source.engine, self.target.engine, pairs)

    # -- what Kafka says ----------------------------------------------------------------

    def high_watermarks(self) -> dict[tuple[str, int], int]:
        if self._consumer is None:
            self._consumer = Consumer(self.client_config(**{"group.id": self.name + "-w"}))
        marks = {}
        for topic in self.topics:
            partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
            for p in partitions:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
                marks[(topic, p)] = high
        return marks

    def published(self) -> int:
        """Messages Debezium wrote to the five topics (changes plus delete tombstones)."""
        return sum(self.high_watermarks().values())

    def caught_up(self) -> bool:
        """The target stores, for every non-empty partition, its end offset."""
        stored = self.stored_offsets()
        return all(stored.get(key) == high for key, high in self.high_watermarks().items() if high)

    # -- convergence --------------------------------------------------------------------

    def converged(self, complete: bool = True) -> bool:
        """The target equals the source; with `complete`, every change is in the ledger."""
        if complete and self.ledger_count() < self.changelog_count():
            return False
        return self.diff().ok

    def wait_converged(self, timeout: float = 120, complete: bool = True) -> float:
        """Waits until `converged(complete)`; returns the monotonic time it was seen."""
        try:
            self.wait(lambda: self.converged(complete), "the target to converge", timeout, 0.25)
        except BaseException:
            print(self.report())
            raise
        return time.monotonic()

    def exactly_once(self) -> tuple[set[str], set[str]]:
        """(lost, unexpected) change ids: the change log's not in the ledger and vice versa."""
        ledger, changelog = self.ledger_ids(), self.changelog_ids()
        assert len(ledger) == len(set(ledger)), "a change id twice in the ledger"
        assert len(changelog) == len(set(changelog)), "the workload touched a row twice in a tx"
        return set(changelog) - set(ledger), set(ledger) - set(changelog)

    def report(self) -> str:
        diff = self.diff()
        return (
            f"pipeline {self.name}: changelog {self.changelog_count()}, ledger "
            f"{self.ledger_count()}, published {self.published()}, failures "
            f"{len(self.failures())}\n{diff.summary()}"
        )

    def close(self) -> None:
        for service in self.services:
            service.ensure_stopped()
        if self.registered:
            self.stack.run("connector", "delete", self.name, check=False)
        if self._consumer is not None:
            self._consumer.close()
        existing = set(self._admin.list_topics(timeout=10).topics)
        ours = [t for t in existing if t.startswith(self.name + ".")]  # with .transaction
        if ours:
            for future in self._admin.delete_topics(ours).values():
                future.result(timeout=30)


def pipeline_factory(
    stack: Stack, endpoints: Endpoints, tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    """Yields a maker of pipelines; closes each afterwards (for a fixture)."""
    made: list[Pipeline] = []

    def make(source: Database, target: Database, **options: Any) -> Pipeline:
        pipeline = Pipeline(stack, endpoints, source, target, tmp_path, **options)
        made.append(pipeline)
        return pipeline.setup()

    try:
        yield make
    finally:  # also when the test (or a bench run) failed: no process outlives it
        for pipeline in made:
            pipeline.close()
