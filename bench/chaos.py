"""Chaos: faults at seeded random moments, by the hundred, on the real pipeline.

    python bench/chaos.py [--faults 120] [--seed 1] [--rate 200] [--burst 2] [--kinds a,b]

On a private stack of its own (tests/e2e/private.py: PostgreSQL, Kafka, Kafka Connect
with Debezium) three `cdc-recon run` instances in one group apply the workload's five
Debezium topics (three partitions each, so partitions move between them) while the
seeded schedule injects `--faults` faults (tests/e2e/faults.py): kill -9 of an instance
at a random moment, at the crash point between the target commit and the Kafka commit,
inside a sweep, a replay and a reconcile --apply (cdc_recon/faults.py), rebalances,
PostgreSQL restarts (`pg_ctl restart -m immediate`: source and target are two databases
of ONE cluster here, so each restart hits both and Debezium's replication connection)
and broker restarts. After each fault: convergence row for row, ledger ids == change log
ids, no position went backwards, every correction with its images (tests/e2e/chaos.py).

One line per fault, a summary, then

    RESULT chaos faults=<n> converged=<n> lost=0 doubled=0 regressed=0 p99_converge_s=<x>
        kills=<n> with_problems=0

(`kills`: faults that killed a cdc-recon process; `with_problems`: faults after which an
invariant failed; the exit code is 1 unless every fault converged without one).

Convergence times come from a shared machine under load: they say how long recovery took
here, not a bound. A kill -9 costs about the group's session timeout (6 s): the dead
member's partitions move only when the coordinator gives up on it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.chaos import ChaosRun, configure, schedule  # noqa: E402
from tests.e2e.faults import Cluster  # noqa: E402
from tests.e2e.pipeline import pipeline_factory  # noqa: E402
from tests.e2e.private import fresh_schema, start_private_stack  # noqa: E402
from tests.e2e.processes import Stack  # noqa: E402

cm = contextlib.contextmanager


def keep_logs(into: Path, stack: Stack, services: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for name in ("connect", "kafka", "postgres"):
        if stack.log(name).exists():
            shutil.copy(stack.log(name), into / f"{name}.log")
    for log in services.glob("service*.err"):
        shutil.copy(log, into / log.name)
    print(f"logs kept in {into}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=200.0, help="workload changes/s")
    parser.add_argument("--burst", type=float, default=2.0, help="seconds of changes per fault")
    parser.add_argument("--kinds", default="", help="comma-separated fault kinds (default: all)")
    parser.add_argument("--max-minutes", type=float, help="start no fault after this long")
    parser.add_argument("--keep-logs", type=Path, help="copy the stack's and services' logs here")
    args = parser.parse_args(argv)
    os.environ.setdefault("CDC_RECON_MONITORING__PORT", "0")
    kinds = schedule(args.faults, args.seed, tuple(filter(None, args.kinds.split(","))))
    with contextlib.ExitStack() as on_exit:
        tmp = Path(on_exit.enter_context(tempfile.TemporaryDirectory(prefix="cdcr-chaos-")))
        stack, endpoints = on_exit.enter_context(cm(start_private_stack)())
        if args.keep_logs:
            on_exit.callback(keep_logs, args.keep_logs, stack, tmp)  # before the stack goes
        source = on_exit.enter_context(cm(fresh_schema)(endpoints.source_url))
        target = on_exit.enter_context(cm(fresh_schema)(endpoints.target_url))
        make = on_exit.enter_context(cm(pipeline_factory)(stack, endpoints, tmp))
        pipeline = make(source, target, partitions=3)
        configure(pipeline)
        run = ChaosRun(pipeline, Cluster(pipeline, stack, tmp), args.seed, args.rate, args.burst)
        print(f"schedule (seed {args.seed}): {len(kinds)} faults", flush=True)
        run.say = lambda line: print(line, flush=True)
        if args.max_minutes:
            run.deadline = time.monotonic() + args.max_minutes * 60
        run.run(kinds)
        print(run.summary())
    print(run.result())
    clean = all(e.converge_s is not None and not e.problems for e in run.episodes)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
