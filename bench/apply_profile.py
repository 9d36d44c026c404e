"""Where apply time goes: each stage alone, and CPU seconds per process in a real run.

A companion to `bench/apply.py` for working on its throughput. On the same kind of
events (written by `bench/apply.py --produce`), it prints:

1. **stages**, one after another on one thread, per 100k events: consume (from Kafka
   into `Message`s), decode (`decode_batch`), prepare (`Applier.prepare_batch`: map,
   collapse, COPY text) and write (`Applier.write`: one target transaction per batch);
   with `--statements`, the target's time per statement kind, read from the server log
   of the project's stack (`log_min_duration_statement=0` for this session only);
2. **cpu**: the real service (as run 1 of `bench/apply.py`) on a fresh topic, and the CPU
   seconds the broker, PostgreSQL and this process spent per 100k events meanwhile
   (from /proc; PostgreSQL counts every backend, so run it on a quiet machine);
3. **threads**, in that same run: what the service's thread did (consume, decode,
   prepare, wait for the apply worker) and how long the worker wrote, per 100k events.
   Whichever of the two is busy all along is the one to make faster.

    scripts/stack up && eval "$(scripts/stack env)"
    .venv/bin/python bench/apply_profile.py --events 100000 --statements
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import apply as bench  # noqa: E402

import cdc_recon.apply.service  # noqa: E402
from cdc_recon.apply.applier import Applier  # noqa: E402
from cdc_recon.apply.pipeline import ApplyPipeline, tune_interpreter  # noqa: E402
from cdc_recon.codecs.messages import decode_batch  # noqa: E402
from cdc_recon.config import ServiceSettings, Settings  # noqa: E402
from cdc_recon.control_schema import init_control_schema  # noqa: E402
from cdc_recon.kafka.consumer import GroupConsumer  # noqa: E402
from cdc_recon.pg.engine import create_engine  # noqa: E402

SERVER_LOG = ROOT / ".stack" / "postgres" / "server.log"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STATEMENT_KINDS = (
    ("COPY _cdcr_ledger", "copy ledger stage (careful way)"),
    ('COPY "_cdcr_stage', "copy row stage"),
    ("COPY ", "copy into the ledger"),
    ("WITH adv AS", "advance key_state"),
    ("UPDATE ", "mark ledger rows superseded"),
    ("INSERT INTO", "upsert rows / other inserts"),
    ("COMMIT", "commit"),
    ("TRUNCATE", "truncate stages"),
)


@contextmanager
def scratch(bootstrap: str, url: str, events: int, partitions: int) -> Iterator[Settings]:
    """A fresh topic holding `events` bench events and a fresh target schema."""
    run_id = uuid.uuid4().hex[:8]
    topic, schema = f"bench.profile.{run_id}", f"bench_profile_{run_id}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            conn.execute(sa.text(f'CREATE TABLE "{schema}".customers {bench.TABLE_DDL}'))
        init_control_schema(engine, schema)
        keys = max(events // 4, 1)
        command = [sys.executable, str(ROOT / "bench" / "apply.py"), "--events", str(events)]
        command += ["--keys", str(keys), "--partitions", str(partitions)]
        subprocess.run([*command, "--produce", bootstrap, topic], check=True)
        yield bench.settings_for(bootstrap, url, schema, topic, f"profile-{run_id}")
    finally:
        admin.delete_topics([topic])
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def timed(label: str, events: int, action: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    print(f"  {label:8s} {seconds:6.2f} s   {seconds * 100_000 / events:5.2f} s per 100k")
    return result


def stages(settings: Settings, url: str, events: int, batch_size: int) -> None:
    """Each stage alone, on one thread, over the whole topic."""
    engine = create_engine(url)
    applier = Applier(engine, settings)
    applier.prepare()
    print(f"stages ({events} events, batches of {batch_size}):")
    messages, _ = timed("consume", events, lambda: bench.consume_all(settings, events))
    batches = [messages[i : i + batch_size] for i in range(0, len(messages), batch_size)]
    decoded = timed(
        "decode", events, lambda: [decode_batch(b, settings.format, None) for b in batches]
    )
    prepared = timed("prepare", events, lambda: [applier.prepare_batch(d) for d in decoded])
    offsets = {(settings.topics[0], 0): 0}
    timed("write", events, lambda: [applier.write(p, offsets, "profile") for p in prepared])
    applier.close()
    engine.dispose()


def statement_times(first_line: int, events: int) -> None:
    """The target's time per statement kind since `first_line` of the server log."""
    totals: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    pattern = re.compile(r"duration: ([\d.]+) ms\s+(?:statement|execute [^:]*): (.*)")
    with SERVER_LOG.open(errors="replace") as log:
        for number, line in enumerate(log):
            found = pattern.search(line) if number >= first_line else None
            if found is None:
                continue
            sql = found.group(2)
            kind = next((name for prefix, name in STATEMENT_KINDS if sql.startswith(prefix)), None)
            kind = kind or "other"
            totals[kind] += float(found.group(1)) / 1000
            counts[kind] += 1
    print("target statements (server log):")
    for kind, seconds in totals.most_common():
        per = seconds * 100_000 / events
        print(f"  {kind:34s} {seconds:6.2f} s   {per:5.2f} s per 100k   ({counts[kind]} runs)")


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of the broker, PostgreSQL, Kafka Connect and this process."""
    found: dict[str, float] = collections.defaultdict(float)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        if int(pid) == os.getpid():
            found["cdc-recon (this process)"] += seconds
        elif "kafka.Kafka" in command:
            found["broker"] += seconds
        elif "ConnectDistributed" in command:
            found["kafka connect"] += seconds
        elif "postgres" in stat:
            found["postgresql"] += seconds
    return found


# What the two threads of the service do: (owner, attribute, label).
THREAD_STEPS = (
    (GroupConsumer, "consume_batch", "service thread: consume"),
    (cdc_recon.apply.service, "decode_batch", "service thread: decode"),
    (Applier, "prepare_batch", "service thread: prepare"),
    (ApplyPipeline, "_finish_oldest", "service thread: wait for the worker"),
    (Applier, "write", "apply worker: write"),
)


@contextmanager
def thread_times() -> Iterator[collections.Counter[str]]:
    """Wall seconds spent in each of `THREAD_STEPS` while the block runs."""
    spent: collections.Counter[str] = collections.Counter()

    def timed_step(step: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - started

        return wrapper

    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in THREAD_STEPS]
    for (owner, name, step), (_, _, label) in zip(originals, THREAD_STEPS, strict=True):
        setattr(owner, name, timed_step(step, label))
    try:
        yield spent
    finally:
        for owner, name, step in originals:
            setattr(owner, name, step)


def cpu(settings: Settings, url: str, events: int, batch_size: int) -> None:
    """The real service over the topic, who spent the CPU meanwhile, and what its two
    threads did (the first batch's group join included)."""
    engine = create_engine(url)
    service = settings.service.model_copy(update={"batch_size": batch_size})
    settings = settings.model_copy(update={"service": service})
    before, started = cpu_seconds(), time.monotonic()
    with thread_times() as spent:
        rate = bench.run_ours(settings, engine, events)
    wall, after = time.monotonic() - started, cpu_seconds()
    engine.dispose()
    print(f"cpu (the service, batches of {batch_size}): {rate:.0f} events/s, {wall:.2f} s wall")
    for name in sorted(after):
        used = after[name] - before.get(name, 0.0)
        print(f"  {name:26s} {used:6.2f} cpu-s   {used * 100_000 / events:5.2f} per 100k")
    print("threads (wall seconds):")
    for _, _, label in THREAD_STEPS:
        seconds = spent[label]
        print(f"  {label:36s} {seconds:6.2f} s   {seconds * 100_000 / events:5.2f} per 100k")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--batch-size", type=int, default=ServiceSettings().batch_size, help="service.batch_size"
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="time the target's statements from the stack's server log",
    )
    args = parser.parse_args()
    bootstrap = os.environ.get("CDC_RECON_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    url = os.environ.get("CDC_RECON_TARGET_URL", "postgresql://cdc_recon@127.0.0.1:15432/target")
    tune_interpreter()  # as the service does: measure the stages as they run there
    if args.statements:
        if not SERVER_LOG.exists():
            raise SystemExit(f"--statements reads {SERVER_LOG}: run scripts/stack up")
        os.environ["PGOPTIONS"] = "-c log_min_duration_statement=0"
    with scratch(bootstrap, url, args.events, args.partitions) as settings:
        first_line = sum(1 for _ in SERVER_LOG.open(errors="replace")) if args.statements else 0
        stages(settings, url, args.events, args.batch_size)
        if args.statements:
            statement_times(first_line, args.events)
            del os.environ["PGOPTIONS"]
    with scratch(bootstrap, url, args.events, args.partitions) as settings:
        cpu(settings, url, args.events, args.batch_size)


if __name__ == "__main__":
    main()
