"""Faults at random moments, many times over: the engine of bench/chaos.py and test_chaos.py.

A `ChaosRun` drives one real pipeline (PostgreSQL -> Debezium -> Kafka -> three
`cdc-recon run` instances in one consumer group -> PostgreSQL) on a stack it may break
(a private one: `tests/e2e/private.py`), through a seeded schedule of faults. One
episode per fault:

1. a burst of workload changes starts (`Burst`: a thread that carries on through a
   PostgreSQL restart, since a restart fails the transaction in flight and nothing else);
2. at a seeded random moment inside the burst the fault is injected (`faults.py`);
3. the fault ends: the killed process is started again, the restarted service is back;
4. the run waits, with a deadline, until the target equals the source row for row and
   the ledger holds every change (`Pipeline.wait`: on a timeout it says which stage
   stalled); the seconds from the end of the fault (or of the burst, if later) to then
   are the episode's convergence time;
5. `Invariants.check`: ledger ids == change log ids (none lost, none twice), no key's
   stored position older than before, every applied correction with its images; and
   the group's offsets committed to Kafka catch up with the stored ones (lag tools).

A fault that does not converge is reported with its stage report and the run goes on to
the next one (three in a row end it); the RESULT line counts both.

Note on this stack: the source and target are two databases of ONE PostgreSQL cluster,
so a `pg_ctl restart -m immediate` hits both at once: cdc-recon's writes and reads, the
workload, and Debezium's replication connection (which must reconnect) together.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from cdc_recon.exceptions import CdcReconError
from cdc_recon.workload import Mix, WorkloadConfig, run_workload
from tests.e2e.faults import FAULTS, Cluster
from tests.e2e.invariants import Invariants
from tests.e2e.pipeline import Pipeline

# Weights of the fault kinds in a schedule: kills (of which some at exact crash points)
# dominate, restarts of PostgreSQL and of the broker come several times in a long run.
WEIGHTS = {
    "kill": 50,
    "kill@db_commit": 12,
    "kill@sweep": 8,
    "kill@replay": 8,
    "kill@reconcile": 8,
    "rebalance": 4,
    "restart_pg": 5,
    "restart_kafka": 5,
}
CONVERGE_TIMEOUT = 240.0
GIVE_UP_AFTER = 3  # faults in a row that did not converge


def configure(pipeline: Pipeline) -> None:
    """The chaos run's settings: reconcile the accounts in small correction transactions
    (a kill inside one rolls back a few); sweeps run as their own processes."""
    source, target = pipeline.source.schema, pipeline.target.schema
    pipeline.reconfigure(
        reconcile={
            "tables": [{"source": f"{source}.accounts", "target": f"{target}.accounts"}],
            "correction_batch": 3,
        },
    )


def schedule(count: int, seed: int, kinds: tuple[str, ...] = ()) -> list[str]:
    """`count` fault kinds, seeded; each kind of `kinds` (default: all) at least once when
    `count` allows, the rest drawn by WEIGHTS, in a shuffled order."""
    rng = random.Random(seed)
    wanted = list(kinds or WEIGHTS)
    chosen = wanted[:count]
    names = [k for k in WEIGHTS if k in wanted]
    chosen += rng.choices(names, [WEIGHTS[k] for k in names], k=max(count - len(chosen), 0))
    rng.shuffle(chosen)
    return chosen


class Burst:
    """`count` workload changes at `rate`/s on a thread, carried on through outages."""

    def __init__(
        self, pipeline: Pipeline, count: int, rate: float, seed: int, writer: threading.Lock
    ) -> None:
        self.pipeline, self.count, self.rate, self.seed = pipeline, count, rate, seed
        self.writer = writer
        self.errors: list[str] = []
        self.started = time.monotonic()
        self.finished = 0.0
        self._thread = threading.Thread(target=self._run, name="chaos-burst", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = self.started + 120
        seed = self.seed
        while time.monotonic() < deadline:
            config = WorkloadConfig(
                schema=self.pipeline.source.schema,
                rate=self.rate,
                duration=None,
                count=self.count,
                mix=Mix(),
                seed=seed,
            )
            try:
                with self.writer:
                    run_workload(self.pipeline.source.engine, config)
                break
            except CdcReconError as exc:  # the source restarting: carry on once it is back
                self.errors.append(str(exc).splitlines()[0])
                seed += 1_000_003
                threading.Event().wait(0.5)  # a back-off while PostgreSQL restarts
        self.finished = time.monotonic()

    def join(self) -> float:
        self._thread.join(180)
        assert not self._thread.is_alive(), "the workload burst did not finish in 180 s"
        return self.finished


@dataclass
class Episode:
    number: int
    kind: str
    detail: str = ""
    converge_s: float | None = None
    killed: bool = False  # a cdc-recon process died by SIGKILL
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        took = f"converged {self.converge_s:5.1f}s" if self.converge_s is not None else "NO"
        bad = f"  PROBLEMS: {'; '.join(self.problems)}" if self.problems else ""
        return f"fault {self.number:>3} {self.kind:<15} {took}  {self.detail}{bad}"


@dataclass
class ChaosRun:
    """See the module docstring."""

    pipeline: Pipeline
    cluster: Cluster
    seed: int = 1
    rate: float = 200.0
    burst_seconds: float = 2.0
    say: Callable[[str], None] = print
    deadline: float | None = None  # monotonic time after which no new fault starts
    episodes: list[Episode] = field(default_factory=list)
    invariants: Invariants = field(default_factory=Invariants)

    def run(self, kinds: list[str]) -> list[Episode]:
        rng = random.Random(self.seed)
        self.cluster.start_group()
        failed_in_a_row = 0
        for number, kind in enumerate(kinds, 1):
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.say(f"time is up: stopping before fault {number}")
                break
            try:
                episode = self.episode(number, kind, rng)
            except (Exception, pytest.fail.Exception) as exc:  # the harness failed
                episode = Episode(number, kind, problems=[f"harness error: {exc!r}"[:500]])
                self.cluster.heal()
            self.episodes.append(episode)
            self.say(episode.line())
            failed_in_a_row = failed_in_a_row + 1 if episode.converge_s is None else 0
            if failed_in_a_row >= GIVE_UP_AFTER:
                self.say(f"{GIVE_UP_AFTER} faults in a row did not converge: stopping")
                break
        self.cluster.stop_group()
        return self.episodes

    def episode(self, number: int, kind: str, rng: random.Random) -> Episode:
        episode = Episode(number, kind)
        self.invariants.observe_positions(self.pipeline)
        fault = FAULTS[kind](self.cluster, rng)
        fault.prepare()
        count = int(self.rate * self.burst_seconds)
        burst = Burst(self.pipeline, count, self.rate, rng.randrange(1 << 30), self.cluster.writer)
        moment = rng.uniform(0.1, 0.9) * self.burst_seconds
        threading.Event().wait(moment)  # the random moment of the fault, not a synchronisation
        try:
            episode.detail = fault.inject()
        except Exception as exc:  # the harness failed, not the pipeline: say so, go on
            episode.problems.append(f"the fault could not be injected: {exc!r}"[:500])
        episode.killed = fault.killed
        ended = max(time.monotonic(), burst.join())
        what = f"the target to converge after fault {number} ({kind})"
        try:
            self.pipeline.wait(self.pipeline.converged, what, CONVERGE_TIMEOUT, 0.25)
        except pytest.fail.Exception as exc:
            episode.problems.append(f"did not converge in {CONVERGE_TIMEOUT:g}s")
            self.say(str(exc))
            self.cluster.heal()
            return episode
        episode.converge_s = time.monotonic() - ended
        episode.problems += self.kafka_copy_caught_up()
        detail, problems = fault.after_converged()
        episode.detail += detail
        episode.problems += problems + self.invariants.check(self.pipeline)
        if burst.errors:
            episode.detail += f"; workload reconnected {len(burst.errors)}x"
        self.cluster.heal()
        return episode

    def kafka_copy_caught_up(self) -> list[str]:
        """The group's offsets committed to Kafka reach the stored ones soon after
        convergence, quiet partitions included (what lag tools read)."""
        pipeline = self.pipeline

        def equal() -> bool:
            try:
                return pipeline.committed_offsets() == pipeline.stored_offsets()
            except Exception:  # a broker too slow to answer in time: ask again
                return False

        try:
            pipeline.wait(
                equal,
                "Kafka's committed offsets to equal the stored ones",
                30,
                1.0,
            )
        except pytest.fail.Exception:
            return ["Kafka's committed offsets still lag the stored ones 30 s after convergence"]
        return []

    def result(self) -> str:
        done = [e.converge_s for e in self.episodes if e.converge_s is not None]
        p99 = _quantile(done, 0.99) if done else float("nan")
        inv = self.invariants
        kills = sum(1 for e in self.episodes if e.killed)
        problems = sum(1 for e in self.episodes if e.problems)
        return (
            f"RESULT chaos faults={len(self.episodes)} converged={len(done)} "
            f"lost={len(inv.lost)} doubled={len(inv.doubled)} regressed={len(inv.regressed)} "
            f"p99_converge_s={p99:.1f} kills={kills} with_problems={problems}"
        )

    def summary(self) -> str:
        kinds = Counter(e.kind for e in self.episodes)
        done = [e.converge_s for e in self.episodes if e.converge_s is not None]
        kills = sum(1 for e in self.episodes if e.killed)
        median = statistics.median(done) if done else float("nan")
        return (
            f"faults by kind: {dict(sorted(kinds.items()))}; kills of a cdc-recon process "
            f"{kills}; converge median {median:.1f}s, max {max(done, default=float('nan')):.1f}s; "
            f"{sum(1 for e in self.episodes if e.problems)} faults with problems; "
            f"changes {self.pipeline.changelog_count()}; {self.cluster.notes()}"
        )


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
