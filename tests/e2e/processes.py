"""What an end-to-end test drives: a stack (scripts/stack), cdc-recon processes, a workload.

A `Stack` names one instance of scripts/stack (the shared one, or a private one on other
ports with its own state directory) and runs the script against it. A `ServiceProcess`
is `cdc-recon run` as users run it; its output goes to files so that no pipe can fill
up. A `WorkloadThread` runs the workload generator on the source while the test watches; a
`CpuHog` keeps one core busy meanwhile, as another tenant of a busy host would.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cdc_recon.workload import Mix, Summary, WorkloadConfig, run_workload

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "stack"


def wait_until(
    condition: Callable[[], Any],
    what: str,
    timeout: float,
    interval: float = 0.2,
    *,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll `condition` until truthy and return its value; fail naming `what` at the deadline,
    with `explain()`'s account of what it saw (`tests.e2e.stages`: which stage stalled)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            seen = f"\n{explain()}" if explain is not None else ""
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}{seen}")
        time.sleep(interval)


@dataclass(frozen=True)
class Stack:
    """One instance of scripts/stack; `env` holds its CDC_RECON_STACK_* overrides."""

    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> str:
        env = {**os.environ, **self.env}
        done = subprocess.run(
            [str(STACK), *args], capture_output=True, text=True, env=env, timeout=timeout
        )
        if check and done.returncode != 0:
            pytest.fail(f"scripts/stack {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def variables(self) -> dict[str, str]:
        """`scripts/stack env` as a dict."""
        found = {}
        for line in self.run("env").splitlines():
            match = re.fullmatch(r"export (\w+)=(.*)", line.strip())
            if match:
                found[match[1]] = shlex.split(match[2])[0]
        return found

    def state(self) -> Path:
        """The stack's state directory (data, logs, pid files)."""
        state = self.env.get("CDC_RECON_STACK_DIR") or os.environ.get("CDC_RECON_STACK_DIR")
        return Path(state) if state else ROOT / ".stack"

    def log(self, service: str) -> Path:
        """The log file of `service`: connect, kafka or postgres."""
        name = {"connect": "connect.log", "kafka": "server.log", "postgres": "server.log"}
        return self.state() / service / name[service]

    def connect_running(self) -> bool:
        env = {**os.environ, **self.env}
        probe = subprocess.run(
            [str(STACK), "connector", "status"], capture_output=True, text=True, env=env
        )
        return probe.returncode == 0


@dataclass
class ServiceProcess:
    """One `cdc-recon run` process."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    @classmethod
    def start(cls, config: Path, env: dict[str, str], *args: str) -> ServiceProcess:
        n = len(list(config.parent.glob("service*.err")))
        out, err = config.parent / f"service{n}.out", config.parent / f"service{n}.err"
        command = [sys.executable, "-m", "cdc_recon.cli", "-c", str(config), "run", *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=full_env)
        return cls(process, out, err)

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM: finish the batch, leave the group; returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"cdc-recon did not stop in {timeout}s:\n{self.stderr[-3000:]}")

    def ensure_stopped(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(30)


class CpuHog:
    """A busy process pinned to one core (`taskset -c CORE`), for as long as it runs: the
    loaded host a fault must also survive. Stopped by its own pid."""

    def __init__(self, core: int = 0) -> None:
        command = [sys.executable, "-c", "while True: pass"]
        if shutil.which("taskset"):
            command = ["taskset", "-c", str(core), *command]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


class WorkloadThread:
    """`run_workload` on a thread; `started`/`finished` are monotonic times."""

    def __init__(
        self, engine: sa.Engine, schema: str, count: int, rate: float, seed: int, mix: str = ""
    ) -> None:
        self.config = WorkloadConfig(
            schema=schema,
            rate=rate,
            duration=None,
            count=count,
            mix=Mix.parse(mix) if mix else Mix(),
            seed=seed,
        )
        self.engine = engine
        self.summary: Summary | None = None
        self.error: BaseException | None = None
        self.started = self.finished = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-workload", daemon=True)

    def _run(self) -> None:
        self.started = time.monotonic()
        try:
            self.summary = run_workload(self.engine, self.config, stop=self._stop)
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.finished = time.monotonic()

    def start(self) -> WorkloadThread:
        self._thread.start()
        wait_until(lambda: self.started, "the workload to start", 10, 0.01)
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = 300) -> Summary:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            pytest.fail(f"the workload did not finish in {timeout}s")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
