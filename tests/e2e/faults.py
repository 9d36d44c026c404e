"""The faults of a chaos run (tests/e2e/chaos.py) and the group of instances they hit.

`Cluster` holds three `cdc-recon run` instances in one consumer group (`SLOTS`), runs the
other cdc-recon commands as users do (`cdc-recon sweep/replay/reconcile` processes), and
restarts the stack's PostgreSQL and Kafka. Each fault has `prepare()` (before the burst),
`inject()` (at the burst's random moment; returns once the fault is over and what was
hit is running again) and `after_converged()` (a check that needs the quiet target).

    kill            kill -9 of a random instance at the moment, started again at once
    kill@db_commit  an instance started with the crash point `apply.db_commit:n`
                    (cdc_recon/faults.py): it SIGKILLs itself after its n-th target
                    commit, before the Kafka commit; started again unarmed
    kill@sweep      `cdc-recon sweep --once` killed at `sweep.staged` (a step classified,
                    not committed); after convergence a full sweep must find nothing missed
    kill@replay     `cdc-recon replay --from -90s` killed after its n-th batch
    kill@reconcile  rows of the target's accounts drifted by hand (currency), then
                    `reconcile --check checksums --fix --apply` killed inside its n-th
                    correction transaction, then run again to the end
    rebalance       an instance stopped (SIGTERM: it leaves the group) and started again
    restart_pg      `pg_ctl restart -m immediate` of the cluster holding source AND target
    restart_kafka   `scripts/stack down kafka`, 1-5 s, `scripts/stack up`
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from cdc_recon.faults import ENV as CRASH_AT
from cdc_recon.workload import WorkloadConfig, run_workload
from tests.e2e.pipeline import Pipeline
from tests.e2e.processes import ServiceProcess, Stack

SLOTS = 3
KILLED = -9


class Cluster:
    """Three instances of one group, the CLI beside them, and the stack's services."""

    def __init__(self, pipeline: Pipeline, stack: Stack, workdir: Path) -> None:
        self.pipeline, self.stack, self.workdir = pipeline, stack, workdir
        self.slots: list[ServiceProcess | None] = [None] * SLOTS
        self.counts: Counter[str] = Counter()
        self.writer = threading.Lock()  # one workload writer at a time (bursts, nudges)
        self._where = {
            "CDC_RECON_KAFKA_BOOTSTRAP": pipeline.endpoints.kafka_bootstrap,
            "CDC_RECON_SOURCE_URL": pipeline.endpoints.source_url,
            "CDC_RECON_TARGET_URL": pipeline.endpoints.target_url,
        }

    # -- the group ----------------------------------------------------------------------

    def start(self, slot: int, **env: str) -> ServiceProcess:
        service = ServiceProcess.start(self.pipeline.path, {**self._where, **env})
        self.pipeline.services.append(service)
        self.slots[slot] = service
        self.counts["instance starts"] += 1
        return service

    def start_group(self) -> None:
        for slot in range(SLOTS):
            self.start(slot)
        started = [s for s in self.slots if s is not None]
        self.pipeline.wait(
            lambda: all("assigned" in s.stderr or not s.alive() for s in started),
            "three instances to own partitions",
            120,
        )

    def alive(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s is not None and s.alive()]

    def heal(self) -> None:
        """Every slot runs an unarmed instance again."""
        for slot, service in enumerate(self.slots):
            if service is None or not service.alive():
                self.start(slot)

    def stop_group(self) -> None:
        for service in self.slots:
            if service is not None and service.alive():
                service.stop()

    # -- the CLI and the stack ----------------------------------------------------------

    def cli(self, *args: str, timeout: float = 180, **env: str) -> tuple[int, str, str]:
        """`cdc-recon -c CONFIG ARGS...`: (exit code, stdout, stderr)."""
        command = [sys.executable, "-m", "cdc_recon.cli", "-c", str(self.pipeline.path), *args]
        full = {**os.environ, **self._where, "PYTHONUNBUFFERED": "1", **env}
        done = subprocess.run(command, capture_output=True, text=True, env=full, timeout=timeout)
        return done.returncode, done.stdout, done.stderr

    def nudge(self, seed: int, changes: int = 20) -> None:
        """A few more source changes, so that an armed instance gets batches to commit."""
        config = WorkloadConfig(
            schema=self.pipeline.source.schema, rate=0, duration=None, count=changes, seed=seed
        )
        with self.writer:
            run_workload(self.pipeline.source.engine, config)

    def restart_pg(self) -> None:
        data = self.stack.state() / "postgres" / "data"
        log = self.stack.state() / "postgres" / "server.log"
        pg_ctl = [str(pg_bin() / "pg_ctl"), "-D", str(data), "-l", str(log), "-m", "immediate"]
        command = [*pg_ctl, "-w", "-t", "120", "restart"]
        if os.getuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"pg_ctl restart failed:\n{done.stdout}{done.stderr}"

    def connector_state(self) -> str:
        return self.pipeline.connector_status()

    def notes(self) -> str:
        return ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items()))


def pg_bin() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if (Path(found.stdout.strip()) / "pg_ctl").exists():
            return Path(found.stdout.strip())
    return sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1]


# -- the faults ----------------------------------------------------------------------------


class Fault:
    """One fault; see the module docstring."""

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster, self.rng = cluster, rng
        self.killed = False  # a cdc-recon process died by SIGKILL

    def prepare(self) -> None:
        """Before the burst starts (the default: nothing)."""

    def inject(self) -> str:
        raise NotImplementedError

    def after_converged(self) -> tuple[str, list[str]]:
        """(detail, problems) of a check on the converged target (default: none)."""
        return "", []

    def _died(self, code: int, stderr: str, point: str) -> str:
        if code == KILLED and f"SIGKILL at {point}" in stderr:
            self.killed = True
            self.cluster.counts[f"killed at {point}"] += 1
            return f"killed at {point}"
        return f"not killed: exited {code} before reaching {point}"


class Kill(Fault):
    def inject(self) -> str:
        slot = self.rng.choice(self.cluster.alive())
        service = self.cluster.slots[slot]
        assert service is not None
        service.kill9()
        self.killed = True
        self.cluster.start(slot)
        return f"instance {slot} (pid {service.process.pid}) kill -9, started again"


class KillAtDbCommit(Fault):
    def prepare(self) -> None:
        self.slot = self.rng.choice(self.cluster.alive())
        self.n = self.rng.randint(1, 4)
        old = self.cluster.slots[self.slot]
        assert old is not None
        old.stop()
        self.armed = self.cluster.start(self.slot, **{CRASH_AT: f"apply.db_commit:{self.n}"})

    def inject(self) -> str:
        armed, deadline = self.armed, time.monotonic() + 90
        while armed.alive() and time.monotonic() < deadline:  # the burst may have ended
            self.cluster.nudge(self.rng.randrange(1 << 30))
            try:
                armed.process.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
        if armed.alive():
            armed.kill9()  # its partitions got no batch in 90 s: a plain kill instead
        outcome = self._died(armed.process.returncode, armed.stderr, "apply.db_commit")
        self.cluster.start(self.slot)
        return f"instance {self.slot} after target commit {self.n}: {outcome}, started again"


class KillDuringSweep(Fault):
    def inject(self) -> str:
        code, _, err = self.cluster.cli("sweep", "--once", **{CRASH_AT: "sweep.staged:1"})
        return f"cdc-recon sweep --once: {self._died(code, err, 'sweep.staged')}"

    def after_converged(self) -> tuple[str, list[str]]:
        code, out, err = self.cluster.cli("sweep", "--once", "--json")
        if code != 0:
            return "", [f"the sweep after convergence exited {code}: {err[-500:]}"]
        found = json.loads(out)
        missed = int(found.get("missed", 0))
        problems = [f"the sweep after convergence found {missed} missed"] if missed else []
        return f"; full sweep after: applied {found.get('applied')}, missed {missed}", problems


class KillDuringReplay(Fault):
    def inject(self) -> str:
        # A replay batch holds up to service.batch_size (1000) messages: ask for no
        # more batches than the window has, or the replay ends before the crash point.
        n = self.rng.randint(1, max(1, min(3, self.cluster.pipeline.changelog_count() // 2000)))
        args = ("replay", "--from", "-90s")
        code, _, err = self.cluster.cli(*args, **{CRASH_AT: f"replay.batch:{n}"})
        return (
            f"cdc-recon replay --from -90s after batch {n}: {self._died(code, err, 'replay.batch')}"
        )


DRIFTED = 20  # target rows changed by hand before a reconcile fault


class KillDuringReconcile(Fault):
    def inject(self) -> str:
        drifted = drift(self.cluster.pipeline, DRIFTED, self.rng.randrange(1 << 30))
        n = self.rng.randint(1, 8)
        args = ("reconcile", "--check", "checksums", "--fix", "--apply")
        code, _, err = self.cluster.cli(*args, **{CRASH_AT: f"reconcile.correction:{n}"})
        outcome = self._died(code, err, "reconcile.correction")
        again, _, err = self.cluster.cli(*args)
        if again not in (0, 1):  # 1: it found (and corrected) differences
            raise AssertionError(f"reconcile --apply exited {again}:\n{err[-2000:]}")
        return f"{drifted} rows drifted; reconcile --apply in correction {n}: {outcome}; run again"


class Rebalance(Fault):
    def inject(self) -> str:
        slot = self.rng.choice(self.cluster.alive())
        service = self.cluster.slots[slot]
        assert service is not None
        code = service.stop()
        self.cluster.start(slot)
        return f"instance {slot} stopped (exit {code}: left the group) and started again"


class RestartPostgres(Fault):
    def inject(self) -> str:
        started = time.monotonic()
        self.cluster.restart_pg()
        self.cluster.counts["postgres restarts"] += 1
        took = time.monotonic() - started
        return f"pg_ctl restart -m immediate (source and target) took {took:.1f}s"

    def after_converged(self) -> tuple[str, list[str]]:
        return connector_running(self.cluster)


class RestartKafka(Fault):
    def inject(self) -> str:
        down = self.rng.uniform(1, 5)
        self.cluster.stack.run("down", "kafka")
        threading.Event().wait(down)  # the outage itself, not a synchronisation
        self.cluster.stack.run("up")
        self.cluster.counts["broker restarts"] += 1
        return f"broker down {down:.1f}s, started again"

    def after_converged(self) -> tuple[str, list[str]]:
        return connector_running(self.cluster)


def connector_running(cluster: Cluster) -> tuple[str, list[str]]:
    state = cluster.connector_state()
    if "FAILED" in state or "RUNNING" not in state:
        return "", [f"connector not RUNNING after the restart: {state.strip()[:300]}"]
    return "", []


def drift(pipeline: Pipeline, rows: int, seed: int) -> int:
    """Changes `rows` accounts rows of the target by hand (currency 'ZZZ', which the
    workload never writes; a balance could overflow its numeric(18,2)): what reconcile
    must find and correct. Returns how many rows changed."""
    sql = (
        "UPDATE {s}.accounts SET currency = 'ZZZ' WHERE id IN (SELECT id FROM {s}.accounts "
        f"ORDER BY md5(id::text || '{seed}') LIMIT {rows})"
    )
    with pipeline.target.engine.begin() as conn:
        return int(conn.execute(sa.text(sql.format(s=f'"{pipeline.target.schema}"'))).rowcount)


FAULTS: dict[str, Callable[[Cluster, random.Random], Fault]] = {
    "kill": Kill,
    "kill@db_commit": KillAtDbCommit,
    "kill@sweep": KillDuringSweep,
    "kill@replay": KillDuringReplay,
    "kill@reconcile": KillDuringReconcile,
    "rebalance": Rebalance,
    "restart_pg": RestartPostgres,
    "restart_kafka": RestartKafka,
}
