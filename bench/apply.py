"""End-to-end apply throughput: Kafka → cdc_recon → target, against three baselines.

Writes N Debezium-shaped JSON events (JsonConverter with schemas, PostgreSQL source) for
K keys into a fresh topic, then, on the same events and in the same run, `--repeat`
times, interleaved (the order rotates each round, so no side always runs right after
another), each run in a process of its own (`bench/apply_runs.py`):

1. **ours**: the consumer-group service (decode, guarded upserts, ledger, offsets in one
   transaction per batch, Kafka commit after), with the Rust COPY text encoders when they
   are installed (`CDC_RECON_NATIVE=0`: the Python ones; the line says which), into an
   empty ledger each round;
2. **per-event**: the same applier with one transaction per event (the naive design),
   on the first `--per-event` events, in the first round only (it is two orders of
   magnitude slower: its ratio is not a close call, and five of its runs would take
   minutes);
3. **raw COPY**: consume and decode the same events, keep the last row per key, COPY the
   final rows into a bare table: no ledger, no guards, no offsets (the floor). Timed
   from its first message, as run 1 is from its first batch: joining a consumer group
   takes 0-3 s that neither run should count. It fetches with the service's prefetch
   settings (`kafka.consumer.PREFETCH`): librdkafka's defaults pause fetching for 1 s
   whenever the local queue fills, which made this floor swing between 61k and 97k.
4. **debezium_jdbc**: the peer, the Debezium JDBC sink connector 3.5.0.Final in a Kafka
   Connect worker of its own (`scripts/stack jdbc-sink up`, which the bench runs when
   the worker does not answer), one task per partition, the best configuration of
   issue 19 (`bench/apply_peer.py`), its JVM warmed up by one unmeasured run first.

With `--ours-from DIR`, cdc_recon as checked out in DIR (its `bench/apply_runs.py` and
its `cdc_recon/`; the same virtualenv) runs in every round too, as `ours-from`: how one
idea measures against its base in the same invocation (`vs_ours_from`).

Then both sides apply the ten rows of tricky changes of `bench/apply_tricky.py` (stale
update, late update after a delete, TOAST placeholder, duplicate) and the bench prints
how many each gets right.

Prints every run, the CPU each side spends per event (its own process's, the JVM's for
the peer, and the PostgreSQL cluster's, `bench/apply_cpu.py`: steadier than events/s
on a loaded machine), the medians with their spread ((max - min) / median), the ratios of
the medians and the range of the per-round ratios, and last the line
`RESULT apply events_per_s=<n> vs_per_event=<x> vs_raw_copy=<x> vs_debezium_jdbc=<x>
peak_rss_mb=<n> repeat=<n> tricky_ours=<right>/10 tricky_debezium_jdbc=<right>/10`
(events/s and ratios are medians; peak RSS is the largest of cdc_recon's runs).

    scripts/stack up && eval "$(scripts/stack env)"
    .venv/bin/python bench/apply.py --events 200000 --keys 50000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import apply_cpu, apply_peer, apply_tricky  # noqa: E402
from bench.apply_runs import (  # noqa: E402, F401  (the names other benches import)
    COLUMNS,
    TABLE_DDL,
    consume_all,
    produce,
    run_ours,
    send,
    settings_for,
)
from cdc_recon.apply import native  # noqa: E402
from cdc_recon.apply.applier import Applier  # noqa: E402
from cdc_recon.apply.service import Service  # noqa: E402
from cdc_recon.config import ServiceSettings  # noqa: E402
from cdc_recon.control_schema import init_control_schema  # noqa: E402
from cdc_recon.kafka.consumer import GroupConsumer  # noqa: E402
from cdc_recon.kafka.producer import DeadLetterProducer  # noqa: E402
from cdc_recon.pg.engine import create_engine  # noqa: E402

RUNS = ROOT / "bench" / "apply_runs.py"
PEER = "debezium_jdbc"
BASE = "ours-from"  # cdc_recon of another tree (`--ours-from`): an idea against its base


class Bench:
    """One invocation's topic, schema and runs."""

    def __init__(self, args: argparse.Namespace, bootstrap: str, url: str) -> None:
        self.args = args
        self.bootstrap, self.url = bootstrap, url
        self.run_id = uuid.uuid4().hex[:8]
        self.topic, self.schema = f"bench.apply.{self.run_id}", f"bench_{self.run_id}"
        self.engine = create_engine(url)
        self.env = {**os.environ, "CDC_RECON_KAFKA_BOOTSTRAP": bootstrap}
        self.env["CDC_RECON_TARGET_URL"] = url
        self.peak_mb = 0.0
        self.rounds = 0
        self.sink: apply_peer.JdbcSink | None = None
        self.postmaster = apply_cpu.postmaster_pid(self.engine)
        # per kind, per run: (the client's CPU, PostgreSQL's CPU) in µs per event
        self.cpu: dict[str, list[tuple[float, float]]] = {}

    def pg_cpu(self) -> float:
        return apply_cpu.cluster_cpu(self.postmaster) if self.postmaster else 0.0

    def note_cpu(self, kind: str, client_s: float, pg_s: float, events: int) -> None:
        self.cpu.setdefault(kind, []).append((1e6 * client_s / events, 1e6 * pg_s / events))

    def table(self, name: str) -> str:
        return f'"{self.schema}".{name}'

    def setup(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        topics = [NewTopic(self.topic, self.args.partitions, 1), NewTopic(self.tricky, 1, 1)]
        for future in admin.create_topics(topics).values():
            future.result(30)
        with self.engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
            for name in ("customers", "raw_customers", "jdbc_customers"):
                conn.execute(sa.text(f"CREATE TABLE {self.table(name)} {TABLE_DDL}"))
            for name in ("tricky", "jdbc_tricky"):
                conn.execute(sa.text(f"CREATE TABLE {self.table(name)} {apply_tricky.TABLE_DDL}"))
        init_control_schema(self.engine, self.schema)

    @property
    def tricky(self) -> str:
        return f"{self.topic}.tricky"

    def cleanup(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.delete_topics([self.topic, f"{self.topic}.dlq", self.tricky, f"{self.tricky}.dlq"])
        with self.engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        self.engine.dispose()

    def produce(self) -> None:
        a = self.args
        print(f"producing {a.events} events for {a.keys} keys into {self.topic} ...")
        subprocess.run(  # a process of its own: the producer's CPU is not the runs'
            [sys.executable, __file__, "--events", str(a.events), "--keys", str(a.keys)]
            + ["--partitions", str(a.partitions), "--produce", self.bootstrap, self.topic],
            check=True,
        )

    def child(self, kind: str, events: int) -> float:
        """One run of ours, per-event or raw COPY in its own process; BASE: ours from the
        tree of `--ours-from`."""
        self.rounds += 1
        script = RUNS
        if kind == BASE:
            kind, script = "ours", Path(self.args.ours_from).resolve() / "bench" / RUNS.name
        if kind in ("ours", "per-event"):
            targets = ("customers", "ledger", "key_state")
        else:
            targets = ("raw_customers",)
        with self.engine.begin() as conn:  # an empty target and ledger every round
            conn.execute(sa.text(f"TRUNCATE {', '.join(self.table(t) for t in targets)}"))
        group = f"bench-{self.run_id}-{self.rounds}"
        pg_before = self.pg_cpu()
        out = subprocess.run(
            [sys.executable, str(script), kind, "--topic", self.topic, "--schema", self.schema]
            + ["--group", group, "--events", str(events)]
            + ["--batch-size", str(self.args.batch_size)],
            check=True,
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        label = BASE if script != RUNS else kind
        self.note_cpu(label, figures["cpu_s_per_event"] * events, self.pg_cpu() - pg_before, events)
        if script == RUNS and kind == "ours":
            self.peak_mb = max(self.peak_mb, figures["peak_rss_mb"])
        return float(figures["events_per_s"])

    def peer(self) -> float:
        assert self.sink is not None
        a = self.args
        self.rounds += 1
        config = apply_peer.connector_config(
            self.topic, f"{self.schema}.jdbc_customers", self.url, a.partitions
        )
        finish = apply_peer.last_per_partition(a.events, a.keys, a.partitions)
        jvm = self.sink_pid()
        before = (apply_cpu.process_cpu(jvm) if jvm else 0.0), self.pg_cpu()
        rate = self.sink.run(f"bench-{self.run_id}-{self.rounds}", config, finish, a.events)
        jvm_s = apply_cpu.process_cpu(jvm) - before[0] if jvm else 0.0
        self.note_cpu(PEER, jvm_s, self.pg_cpu() - before[1], a.events)
        return rate

    @staticmethod
    def sink_pid() -> int | None:
        """The JDBC sink worker's JVM, from the stack's pid file (CDC_RECON_STACK_DIR)."""
        state = Path(os.environ.get("CDC_RECON_STACK_DIR") or ROOT / ".stack")
        try:
            return int((state / "jdbc-sink" / "connect.pid").read_text())
        except (OSError, ValueError):
            return None

    def start_peer(self) -> None:
        sink_url = os.environ.get("CDC_RECON_JDBC_SINK_URL") or "http://127.0.0.1:{}".format(
            int(os.environ.get("CDC_RECON_STACK_CONNECT_PORT", "18083")) + 1
        )
        sink = apply_peer.JdbcSink(sink_url, self.engine, self.table("jdbc_customers"))
        if not sink.available():
            print(f"no JDBC sink worker at {sink_url}: scripts/stack jdbc-sink up ...")
            subprocess.run([str(ROOT / "scripts" / "stack"), "jdbc-sink", "up"], check=True)
            if not sink.available():
                raise SystemExit(f"the JDBC sink worker does not answer at {sink_url}")
        self.sink = sink
        rate = self.peer()
        print(f"{PEER} warm-up: {rate:10.0f} events/s (not counted)")


def tricky_scores(bench: Bench) -> dict[str, dict[str, int]]:
    """Both sides on the tricky set: rows right per case."""
    count = send(bench.bootstrap, bench.tricky, apply_tricky.events())
    settings = settings_for(
        bench.bootstrap, bench.url, bench.schema, bench.tricky, f"tricky-{bench.run_id}", "tricky"
    )
    applier = Applier(bench.engine, settings)
    applier.prepare()
    producer = DeadLetterProducer(settings)
    stats = Service(settings, applier, GroupConsumer(settings), producer).run(until_idle=2.0)
    producer.close()
    applier.close()
    if stats.messages < count:
        raise SystemExit(f"tricky set: ours read {stats.messages} of {count} messages")
    scores = {"ours": apply_tricky.score(bench.engine, bench.table("tricky"))}
    if bench.sink is not None:
        table = bench.table("jdbc_tricky")
        sink = apply_peer.JdbcSink(bench.sink.url, bench.engine, table)
        config = apply_peer.connector_config(
            bench.tricky, f"{bench.schema}.jdbc_tricky", bench.url, 1
        )
        sentinel = apply_peer.Finish(((apply_tricky.SENTINEL, "end"),))
        sink.run(f"tricky-{bench.run_id}", config, sentinel, count)
        scores[PEER] = apply_tricky.score(bench.engine, table)
    return scores


def spread(runs: list[float]) -> str:
    median = statistics.median(runs)
    return f"{median:10.0f} median, spread {100 * (max(runs) - min(runs)) / median:4.0f} %"


def report(runs: dict[str, list[float]], bench: Bench, tricky: dict[str, dict[str, int]]) -> None:
    for kind, figures in runs.items():
        print(f"{kind:>14}: {spread(figures)}  ({', '.join(f'{f:.0f}' for f in figures)})")
    ours = statistics.median(runs["ours"])
    ratios: dict[str, float] = {}
    for kind in ("per-event", "raw-copy", PEER, BASE):
        if kind not in runs:
            continue
        same = runs["ours"][: len(runs[kind])]  # per-event runs in the first round only
        ratios[kind] = statistics.median(same) / statistics.median(runs[kind])
        rounds = [o / b for o, b in zip(same, runs[kind], strict=True)]
        print(
            f"vs {kind}: {ratios[kind]:.2f} (ratio of medians over {len(same)} rounds; "
            f"per round {min(rounds):.2f}-{max(rounds):.2f})"
        )
    for kind, figures in bench.cpu.items():
        client = statistics.median(c for c, _ in figures)
        pg = statistics.median(p for _, p in figures)
        print(f"{kind:>14}: CPU {client:6.1f} µs/event in its process, {pg:6.1f} in PostgreSQL")
    for side, scores in tricky.items():
        print(f"tricky, {side}: {apply_tricky.describe(scores)}")
    print(f"ours: peak RSS {bench.peak_mb:.0f} MB, {native.describe()} encoders")
    total = sum(len(keys) for keys in apply_tricky.CASES.values())
    line = f"RESULT apply events_per_s={ours:.0f}"
    if "per-event" in ratios:
        line += f" vs_per_event={ratios['per-event']:.2f}"
    line += f" vs_raw_copy={ratios['raw-copy']:.2f}"
    if PEER in ratios:
        line += f" vs_debezium_jdbc={ratios[PEER]:.2f}"
    if BASE in ratios:
        line += f" vs_ours_from={ratios[BASE]:.2f}"
    line += f" peak_rss_mb={bench.peak_mb:.0f} repeat={len(runs['ours'])}"
    for side, scores in tricky.items():
        line += f" tricky_{side}={sum(scores.values())}/{total}"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--per-event", type=int, default=5_000, help="events; 0: not run")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds (medians)")
    parser.add_argument("--no-peer", action="store_true", help="without the JDBC sink")
    parser.add_argument(
        "--ours-from", metavar="DIR", help="also run cdc_recon from this tree (an idea's base)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=ServiceSettings().batch_size, help="service.batch_size"
    )
    parser.add_argument(
        "--produce", nargs=2, metavar=("BOOTSTRAP", "TOPIC"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.produce:
        produce(args.produce[0], args.produce[1], args.events, args.keys, args.partitions)
        return
    bootstrap = os.environ.get("CDC_RECON_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    url = os.environ.get("CDC_RECON_TARGET_URL", "postgresql://cdc_recon@127.0.0.1:15432/target")
    bench = Bench(args, bootstrap, url)
    bench.setup()
    try:
        bench.produce()
        if not args.no_peer:
            bench.start_peer()
        kinds = ["ours", "raw-copy"] + (["per-event"] if args.per_event > 0 else [])
        kinds += [] if args.no_peer else [PEER]
        kinds += [BASE] if args.ours_from else []
        runs: dict[str, list[float]] = {kind: [] for kind in kinds}
        for round_ in range(args.repeat):
            order = kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]
            for kind in order:
                if kind == "per-event" and round_ and runs[kind]:
                    continue  # one run: ~100x slower than the others, its ratio is not close
                if kind == PEER:
                    rate = bench.peer()
                else:
                    events = min(args.per_event, args.events) if kind == "per-event" else None
                    rate = bench.child(kind, events or args.events)
                runs[kind].append(rate)
                print(f"round {round_ + 1} {kind:>14}: {rate:10.0f} events/s", flush=True)
        report(runs, bench, tricky_scores(bench))
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
