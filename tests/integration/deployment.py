"""`cdc-recon` as users run it, for integration tests: a config file per deployment,
its commands in subprocesses, their output in files.

Each deployment gets its own topic, dead-letter topic and consumer group, and the
test's target schema as its control schema (`Deployments.make`; the `deployments`
fixture is in conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdc_recon.apply.service import CRASH_AFTER_DB_COMMIT_ENV
from tests.conftest import Database, Services

CRASH_ENV = CRASH_AFTER_DB_COMMIT_ENV


@dataclass
class Instance:
    """One `cdc-recon` process; its output goes to files so that no pipe can fill up."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def wait(self, timeout: float = 120.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"cdc-recon did not exit in {timeout}s; stderr:\n{self.stderr[-3000:]}")


class Deployment:
    """A config file and the commands that run against it."""

    def __init__(self, tmp_path: Path, services: Services, config: dict[str, Any]) -> None:
        self.tmp_path = tmp_path
        self.services = services
        self.config = config
        self.path = tmp_path / "cdc-recon.yml"
        self.path.write_text(yaml.safe_dump(config))
        self.instances: list[Instance] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        env.update(
            CDC_RECON_KAFKA_BOOTSTRAP=self.services.kafka_bootstrap,
            CDC_RECON_TARGET_URL=self.services.target_url,
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def start(self, *args: str, **env: str) -> Instance:
        n = len(self.instances)
        out, err = self.tmp_path / f"out{n}.txt", self.tmp_path / f"err{n}.txt"
        command = [sys.executable, "-m", "cdc_recon.cli", "-c", str(self.path), *args]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=self.env(**env))
        instance = Instance(process, out, err)
        self.instances.append(instance)
        return instance

    def run(self, *args: str, timeout: float = 120.0, **env: str) -> Instance:
        instance = self.start(*args, **env)
        instance.wait(timeout)
        return instance

    def stop_all(self) -> None:
        for instance in self.instances:
            if instance.process.poll() is None:
                instance.process.kill()
                instance.process.wait(10)


class Deployments:
    """Makes deployments for one test: each with its own consumer group, topic and
    dead-letter topic, the test's control schema, and `cdc-recon init` run; stops their
    processes at the end."""

    def __init__(
        self,
        tmp_path: Path,
        services: Services,
        target_db: Database,
        topic_factory: Callable[..., str],
    ) -> None:
        self._tmp_path, self._services = tmp_path, services
        self.db, self._topic_factory = target_db, topic_factory
        self.made: list[Deployment] = []

    def make(self, prefix: str, partitions: int = 1, **config: Any) -> Deployment:
        config = {
            "group_id": f"cdcr-{prefix}-{uuid.uuid4().hex[:8]}",
            "topics": [self._topic_factory(prefix, partitions=partitions)],
            "dead_letter_topic": self._topic_factory(f"{prefix}-dlq"),
            "control_schema": self.db.schema,
            **config,
        }
        deployment = Deployment(self._tmp_path, self._services, config)
        init = deployment.run("init")
        assert init.process.returncode == 0, init.stderr
        self.made.append(deployment)
        return deployment

    def mapping(self, table: str, key: str = "id", **options: Any) -> dict[str, Any]:
        """The mapping of source `public.<table>` to the test's `<table>`."""
        return {
            "source": f"public.{table}",
            "target": f"{self.db.schema}.{table}",
            "key": [key],
            **options,
        }

    def create(self, ddl: str) -> None:
        """Run DDL in the target, `{t}` standing for the test's schema (quoted)."""
        with self.db.engine.begin() as conn:
            conn.exec_driver_sql(ddl.format(t=f'"{self.db.schema}"'))


