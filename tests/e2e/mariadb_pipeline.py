"""One real CDC pipeline per test from a MariaDB source:
MariaDB → Debezium MariaDB connector → Kafka → cdc-recon → PostgreSQL.

`MariaDbPipeline` is `tests.e2e.pipeline.Pipeline` with the other source: a fresh MariaDB
database of its own holding the MySQL-typed shop (`cdc_recon.workload.mariadb`), its
PostgreSQL target tables in the test's target schema, a Debezium MariaDB connector of its
own (`scripts/stack connector register NAME --source mariadb`), and a cdc-recon config
mapping the five tables for the `mysql` connector family. `close()` deletes the
connector (its offsets and schema history), the topics and the database.

What counts as the source's record of its changes: the workload's own count of the
statements it committed (each changes exactly one row, no row twice in a transaction, so
each is one Debezium event and one ledger row); `exactly_once()` checks the ledger
against it: as many change ids as changes, none twice, every one of this source.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from cdc_recon.mariadb.connection import connect, parse_url
from cdc_recon.mariadb.sql import quote_ident
from cdc_recon.workload import TABLES, Summary
from cdc_recon.workload.mariadb import (
    create_mariadb_tables,
    create_target_tables,
    mariadb_mappings,
    run_mariadb_workload,
)
from tests.conftest import Database
from tests.e2e.compare import SchemaDiff
from tests.e2e.compare_mariadb import compare_mariadb
from tests.e2e.pipeline import Endpoints, Pipeline
from tests.e2e.processes import Stack, WorkloadThread


class MariaDbWorkload(WorkloadThread):
    """`WorkloadThread` running `run_mariadb_workload`; `made` counts committed changes as
    they happen (the source's record of its changes here)."""

    def __init__(self, url: str, count: int, rate: float, seed: int, mix: str = "") -> None:
        self.url = parse_url(url)
        super().__init__(None, self.url.database, count, rate, seed, mix)  # type: ignore[arg-type]
        self.config = dataclasses.replace(self.config, progress_every=0.0)
        self.live: Summary | None = None

    def _watch(self, summary: Summary) -> None:
        self.live = summary

    def _run(self) -> None:
        self.started = time.monotonic()
        try:
            self.summary = run_mariadb_workload(
                self.url, self.config, on_progress=self._watch, stop=self._stop
            )
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.finished = time.monotonic()

    @property
    def made(self) -> int:
        done = self.summary or self.live
        return done.total if done is not None else 0


class MariaDbPipeline(Pipeline):
    """See the module docstring."""

    def __init__(
        self,
        stack: Stack,
        endpoints: Endpoints,
        mariadb_url: str,
        target: Database,
        tmp_path: Path,
        *,
        partitions: int = 2,
    ) -> None:
        self.mariadb = dataclasses.replace(
            parse_url(mariadb_url), database=f"e2e_{target.schema[-12:]}"
        )
        self.workloads: list[MariaDbWorkload] = []
        super().__init__(stack, endpoints, target, target, tmp_path, partitions=partitions)
        # the service's environment names the source too (it would win over the file)
        self.endpoints = dataclasses.replace(endpoints, source_url=self.mariadb_url)
        self.topics = [f"{self.name}.{self.mariadb.database}.{t.name}" for t in TABLES]
        self.config = self._config()

    @property
    def mariadb_url(self) -> str:
        return str(self.mariadb)  # the stack's accounts have no password

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        if not hasattr(self, "mariadb"):
            return config  # Pipeline.__init__'s call, before the source is known
        config["source_url"] = self.mariadb_url
        config["topics"] = self.topics
        config["tables"] = mariadb_mappings(self.mariadb.database, self.target.schema)
        config["sweeper"] = {"adapter": "kafka_topic", "grace": 0}
        return config

    def setup(self) -> MariaDbPipeline:
        from cdc_recon.control_schema import init_control_schema

        create_mariadb_tables(self.mariadb)
        create_target_tables(self.target.engine, self.target.schema)
        init_control_schema(self.target.engine, self.target.schema)
        self._create_topics(self.partitions)
        import yaml

        self.path.write_text(yaml.safe_dump(self.config, allow_unicode=True))
        self.registered = True
        tables = ",".join(f"{self.mariadb.database}.{t.name}" for t in TABLES)
        self.stack.run(
            "connector", "register", self.name, "--source", "mariadb",
            f"database.include.list={self.mariadb.database}",
            f"table.include.list={tables}", f"topic.prefix={self.name}",
            "--wait", "90",
        )  # fmt: skip
        return self

    def workload(  # type: ignore[override]
        self, count: int, rate: float, seed: int, mix: str = ""
    ) -> MariaDbWorkload:
        work = MariaDbWorkload(self.mariadb_url, count, rate, seed, mix)
        self.workloads.append(work)
        return work

    # -- the source's record, and the checks ---------------------------------------------

    def changelog_count(self) -> int:
        return sum(work.made for work in self.workloads)

    def messages(self) -> int:
        """What Debezium publishes for the finished workloads: each change, and a
        tombstone after each delete."""
        done = [work.summary for work in self.workloads if work.summary is not None]
        return sum(s.total + s.by_kind()["delete"] for s in done)

    def diff(self) -> SchemaDiff:
        return compare_mariadb(self.mariadb_url, self.target.engine, self.target.schema)

    def exactly_once(self) -> tuple[set[str], set[str]]:
        """(lost, unexpected) as counts can say them: ledger ids are unique, all of this
        database's tables, and as many as the changes the workloads made."""
        ids = self.ledger_ids()
        assert len(ids) == len(set(ids)), "a change id twice in the ledger"
        prefix = f"{self.mariadb.database}."
        foreign = {i for i in ids if not i.startswith(prefix)}
        made = self.changelog_count()
        lost = {f"{made - len(ids)} changes"} if len(ids) < made else set()
        unexpected = foreign | ({f"{len(ids) - made} extra"} if len(ids) > made else set())
        return lost, unexpected

    def close(self) -> None:
        for work in self.workloads:
            work.stop()
        try:
            super().close()
        finally:
            with connect(self.mariadb) as conn, conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(self.mariadb.database)}")
