"""Soak: the real pipeline at a steady rate for a long time; do memory and latency stay flat?

    python bench/soak.py [--minutes 30] [--rate 200] [--seed 1]

On a private stack of its own (tests/e2e/private.py: PostgreSQL, Kafka, Kafka Connect with
Debezium), the workload changes the source at `--rate` changes/s for `--minutes`; one
`cdc-recon run` applies the Debezium topics with its sweeper on, sweeping every minute.
Each minute it samples the service's resident memory (/proc), the applier's batch latency
over that minute (the `cdc_recon_batch_apply_seconds` histogram of its /metrics: mean and
p99 from the bucket deltas), the end-to-end latency of the minute's changes (ledger
`applied_at` - source commit time), the lag (source changes not yet in the ledger) and
the sweeps recorded. At the end the target must equal the source row for row and the
ledger hold exactly the change log's change ids.

The last line compares minute 1 with the last minute:

    RESULT soak minutes=30 rate=200 rss_mb_m1=... rss_mb_last=... rss_ratio=...
        apply_ms_m1=... apply_ms_last=... apply_ratio=... e2e_ms_m1=... e2e_ms_last=...
        sweeps=... missed=0 lost=0 doubled=0 events_per_s=... peak_rss_mb=...

Figures from a shared, loaded machine say so: read them as ratios within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.pipeline import Pipeline, pipeline_factory  # noqa: E402
from tests.e2e.private import free_ports, fresh_schema, start_private_stack  # noqa: E402

HISTOGRAM = "cdc_recon_batch_apply_seconds"
cm = contextlib.contextmanager


@dataclass(frozen=True)
class Sample:
    minute: int
    rss_mb: float
    apply_mean_ms: float
    apply_p99_ms: float
    e2e_ms: float
    lag: int
    sweeps: int
    missed: int

    def line(self) -> str:
        return (
            f"minute {self.minute:>3}: rss {self.rss_mb:6.1f} MB, batch apply mean "
            f"{self.apply_mean_ms:6.1f} ms p99 {self.apply_p99_ms:6.1f} ms, end to end "
            f"{self.e2e_ms:7.1f} ms, lag {self.lag:>5}, sweeps {self.sweeps:>3}, "
            f"missed {self.missed}"
        )


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match[1]) / 1024 if match else 0.0


def peak_rss_mb(pid: int) -> float:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match[1]) / 1024 if match else 0.0


def histogram(port: int) -> dict[float, float]:
    """Cumulative bucket counts of the apply histogram, by upper bound (inf for +Inf)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found: dict[float, float] = {}
    for match in re.finditer(rf'^{HISTOGRAM}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M):
        found[float(match[1])] = float(match[2])
    for name in ("sum", "count"):
        match = re.search(rf"^{HISTOGRAM}_{name} (\S+)$", text, re.M)
        found[-1.0 if name == "sum" else -2.0] = float(match[1]) if match else 0.0
    return found


def minute_latency(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """(mean ms, p99 ms as the upper bound of the bucket holding it) between two scrapes."""
    count = after.get(-2.0, 0) - before.get(-2.0, 0)
    if count <= 0:
        return 0.0, 0.0
    mean = (after.get(-1.0, 0) - before.get(-1.0, 0)) / count
    bounds = sorted(b for b in after if b >= 0)
    p99 = bounds[-1]
    for bound in bounds:
        if after[bound] - before.get(bound, 0) >= 0.99 * count:
            p99 = bound
            break
    return mean * 1000, p99 * 1000


def e2e_ms(pipeline: Pipeline, since: float) -> float:
    """Mean ms from a change's source commit to its ledger row, of the last `since` s."""
    sql = (
        "SELECT coalesce(avg(extract(epoch FROM applied_at - source_ts)) * 1000, 0) "
        f"FROM {{s}}.ledger WHERE applied_at > now() - interval '{since:g} seconds'"
    )
    return float(pipeline.scalar(pipeline.target, sql))


def sweeps(pipeline: Pipeline) -> tuple[int, int]:
    """(sweeps finished, changes they found missed)."""
    sql = (
        "SELECT count(*), coalesce(sum(missed), 0) FROM {s}.sweep_runs "
        "WHERE finished_at IS NOT NULL"
    )
    with pipeline.target.engine.connect() as conn:
        row = conn.execute(sa.text(sql.format(s=f'"{pipeline.target.schema}"'))).one()
    return int(row[0]), int(row[1])


def soak(pipeline: Pipeline, minutes: float, rate: float, seed: int) -> dict[str, Any]:
    port = int(free_ports()["CDC_RECON_STACK_KAFKA_PORT"])
    service = pipeline.start_service(CDC_RECON_MONITORING__PORT=str(port))
    pid = service.process.pid
    work = pipeline.workload(int(rate * minutes * 60), rate, seed).start()
    samples: list[Sample] = []
    last = histogram(port)
    for minute in range(1, int(minutes) + 1):
        due = work.started + minute * 60
        while time.monotonic() < due:  # the sampling period itself, not a synchronisation
            assert service.alive(), service.stderr[-3000:]
            time.sleep(min(1.0, max(due - time.monotonic(), 0)))
        now = histogram(port)
        mean, p99 = minute_latency(last, now)
        last = now
        done, missed = sweeps(pipeline)
        lag = pipeline.changelog_count() - pipeline.ledger_count()
        samples.append(
            Sample(minute, rss_mb(pid), mean, p99, e2e_ms(pipeline, 60), lag, done, missed)
        )
        print(samples[-1].line(), flush=True)
    summary = work.join(timeout=minutes * 60 + 600)
    converged = pipeline.wait_converged(timeout=300)
    lost, unexpected = pipeline.exactly_once()
    peak = peak_rss_mb(pid)
    assert service.stop() == 0, service.stderr[-3000:]
    first, final = samples[0], samples[-1]
    return {
        "minutes": len(samples),
        "rate": f"{rate:g}",
        "rss_mb_m1": f"{first.rss_mb:.1f}",
        "rss_mb_last": f"{final.rss_mb:.1f}",
        "rss_ratio": f"{final.rss_mb / first.rss_mb:.2f}",
        "apply_ms_m1": f"{first.apply_mean_ms:.1f}",
        "apply_ms_last": f"{final.apply_mean_ms:.1f}",
        "apply_ratio": f"{final.apply_mean_ms / first.apply_mean_ms:.2f}"
        if first.apply_mean_ms
        else "nan",
        "apply_p99_ms_m1": f"{first.apply_p99_ms:.0f}",
        "apply_p99_ms_last": f"{final.apply_p99_ms:.0f}",
        "e2e_ms_m1": f"{first.e2e_ms:.0f}",
        "e2e_ms_last": f"{final.e2e_ms:.0f}",
        "sweeps": final.sweeps,
        "missed": final.missed,
        "lost": len(lost),
        "doubled": len(unexpected),
        "events_per_s": f"{summary.total / (converged - work.started):.0f}",
        "peak_rss_mb": f"{peak:.1f}",
    }


SOAK_CONFIG = {
    "sweeper": {"enabled": True, "interval": 60.0, "grace": 5.0},
    "monitoring": {"enabled": True},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as on_exit:
        tmp = on_exit.enter_context(tempfile.TemporaryDirectory(prefix="cdcr-soak-"))
        stack, endpoints = on_exit.enter_context(cm(start_private_stack)())
        source = on_exit.enter_context(cm(fresh_schema)(endpoints.source_url))
        target = on_exit.enter_context(cm(fresh_schema)(endpoints.target_url))
        make = on_exit.enter_context(cm(pipeline_factory)(stack, endpoints, Path(tmp)))
        pipeline = make(source, target, overrides=SOAK_CONFIG)
        result = soak(pipeline, args.minutes, args.rate, args.seed)
    print("RESULT soak " + " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
