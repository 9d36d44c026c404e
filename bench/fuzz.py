"""Fuzz bench: hostile Debezium messages among good ones, through the real `cdc-recon run`.

Issue 13, deliverable 6. One run: a fresh target schema `fuzz_<id>` with
`orders(id bigint primary key, status text, amount numeric(12,2), note text,
updated_at timestamptz)` mapped from `public.orders`, its own control schema, consumer
group, 4-partition topic and dead-letter topic (both taking 4 MB messages); the messages
of `bench/fuzz_messages.py` produced in order; `cdc-recon init`, then one
`cdc-recon run --until-idle 10` (never restarted) with a deadline; then the accounting,
from the control tables and the dead-letter topic:

    crashes              the service exited non-zero or printed a traceback
    stalls               it did not exit by the deadline (then it is killed, and each
                         partition's stored offset is shown against its end)
    unaccounted          messages neither in the ledger, nor in failures, nor a counted
                         skip (a tombstone below its partition's stored offset)
    wrong_rows           target rows that differ from what the good changes alone leave
                         (missing, extra or other values; Decimal and aware datetimes)
    dead_letters_missing failures with no message of their coordinates on the dead-letter
                         topic, unless their `dead_letter` column says `too_large`

Before the RESULT line it names hostile messages that reached the ledger
(`hostile_applied`), good ones that were quarantined, and log lines forged by a line break
in a name or value. The exit code is 0 only when all of those are zero.

    eval "$(scripts/stack env)"
    .venv/bin/python bench/fuzz.py [--hostile 12000] [--good 2000] [--seed 13]
                                   [--partitions 4] [--keys 200]

Last line: `RESULT fuzz messages=<n> crashes=<n> stalls=<n> unaccounted=<n> wrong_rows=<n>
dead_letters_missing=<n> peak_rss_mb=<n>`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fuzz_messages import (  # noqa: E402
    APPLY,
    FORGED,
    QUARANTINE,
    SKIP,
    Batch,
    FuzzMessage,
    Row,
    generate,
)
from cdc_recon.pg.engine import create_engine  # noqa: E402

COUNTERS = ("crashes", "stalls", "unaccounted", "wrong_rows", "dead_letters_missing")
FOUR_MB = 4 << 20
Coord = tuple[int, int]  # (partition, offset) on the run's topic
Log = Callable[[str], None]
SHOWN = 5  # coordinates shown per family in a report line


@dataclass(frozen=True)
class Options:
    hostile: int = 12_000
    good: int = 2_000
    seed: int = 13
    partitions: int = 4
    keys: int = 200
    minimum: int = 1  # messages per hostile family, at least
    until_idle: float = 10.0
    deadline: float = 600.0  # seconds the service may run before it counts as stalled
    max_message_bytes: int = FOUR_MB
    dlq_max_message_bytes: int = FOUR_MB
    debug: bool = False  # `cdc-recon --debug run`: tracebacks, debug logging
    keep: bool | None = None  # keep schemas and topics; None: only when something failed
    only: tuple[str, ...] = ()  # hostile families to generate (default: all)


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    target_url: str

    @classmethod
    def from_env(cls) -> Endpoints:
        """`CDC_RECON_KAFKA_BOOTSTRAP` / `CDC_RECON_TARGET_URL`, else `scripts/stack env`."""
        found = dict(os.environ)
        if not (found.get("CDC_RECON_KAFKA_BOOTSTRAP") and found.get("CDC_RECON_TARGET_URL")):
            env = subprocess.run(
                [str(ROOT / "scripts/stack"), "env"], capture_output=True, text=True, check=True
            )
            for line in env.stdout.splitlines():
                match = re.fullmatch(r"export (\w+)=(.*)", line.strip())
                if match:
                    found.setdefault(match[1], shlex.split(match[2])[0])
        return cls(found["CDC_RECON_KAFKA_BOOTSTRAP"], found["CDC_RECON_TARGET_URL"])


@dataclass
class Deployment:
    """The run's own schemas, topics, group and config file."""

    endpoints: Endpoints
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def schema(self) -> str:
        return f"fuzz_{self.run_id}"

    @property
    def control_schema(self) -> str:
        return f"fuzz_{self.run_id}_control"

    @property
    def topic(self) -> str:
        return f"cdcr.fuzz.{self.run_id}"

    @property
    def dlq(self) -> str:
        return f"cdcr.fuzz.{self.run_id}.dead-letter"

    @property
    def group(self) -> str:
        return f"cdcr-fuzz-{self.run_id}"

    @property
    def workdir(self) -> Path:
        return Path(os.environ.get("TMPDIR", "/tmp")) / f"cdcr-fuzz-{self.run_id}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "cdc-recon.yml"

    @functools.cached_property
    def _engine(self) -> sa.Engine:
        return create_engine(self.endpoints.target_url, name="target", pool_size=1)

    def engine(self) -> sa.Engine:
        return self._engine

    def create(self, options: Options) -> None:
        with self.engine().begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
            conn.execute(
                sa.text(
                    f'CREATE TABLE "{self.schema}".orders (id bigint PRIMARY KEY, status text, '
                    "amount numeric(12,2), note text, updated_at timestamptz)"
                )
            )
        admin = AdminClient({"bootstrap.servers": self.endpoints.kafka_bootstrap})
        topics = [
            NewTopic(
                self.topic,
                options.partitions,
                1,
                config={"max.message.bytes": str(options.max_message_bytes)},
            ),
            NewTopic(
                self.dlq, 1, 1, config={"max.message.bytes": str(options.dlq_max_message_bytes)}
            ),
        ]
        for future in admin.create_topics(topics).values():
            future.result(timeout=30)
        config = {
            "group_id": self.group,
            "topics": [self.topic],
            "dead_letter_topic": self.dlq,
            "control_schema": self.control_schema,
            "monitoring": {"port": 0},
            "tables": [
                {"source": "public.orders", "target": f"{self.schema}.orders", "key": ["id"]}
            ],
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))
        init = subprocess.run(self.command("init"), capture_output=True, text=True, env=self.env())
        if init.returncode != 0:
            raise RuntimeError(f"cdc-recon init failed ({init.returncode}): {init.stderr}")

    def command(self, *args: str, debug: bool = False) -> list[str]:
        flags = ["--debug"] if debug else []
        return [sys.executable, "-m", "cdc_recon.cli", "-c", str(self.config_path), *flags, *args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDC_RECON_")}
        env.update(
            CDC_RECON_KAFKA_BOOTSTRAP=self.endpoints.kafka_bootstrap,
            CDC_RECON_TARGET_URL=self.endpoints.target_url,
            PYTHONUNBUFFERED="1",
        )
        return env

    def drop(self) -> None:
        with self.engine().begin() as conn:
            for schema in (self.schema, self.control_schema):
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin = AdminClient({"bootstrap.servers": self.endpoints.kafka_bootstrap})
        for future in admin.delete_topics([self.topic, self.dlq]).values():
            future.result(timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)


def produce(deployment: Deployment, batch: Batch, options: Options, log: Log) -> list[Coord]:
    """Writes the messages in order, each to its partition; returns their coordinates."""
    producer = Producer(
        {
            "bootstrap.servers": deployment.endpoints.kafka_bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "message.max.bytes": options.max_message_bytes,
        }
    )
    coords: list[Coord | None] = [None] * len(batch.messages)
    errors: list[str] = []

    def delivered(index: int) -> Callable[[KafkaError | None, Any], None]:
        def report(error: KafkaError | None, msg: Any) -> None:
            if error is not None:
                errors.append(f"message {index} ({batch.messages[index].family}): {error}")
            else:
                coords[index] = (msg.partition(), msg.offset())

        return report

    started = time.monotonic()
    for index, message in enumerate(batch.messages):
        while True:
            try:
                producer.produce(
                    deployment.topic,
                    key=message.key,
                    value=message.value,
                    partition=message.partition,
                    on_delivery=delivered(index),
                )
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    left = producer.flush(120)
    if left or errors or None in coords:
        raise RuntimeError(f"producing failed: {left} undelivered; {errors[:3]}")
    size = sum(len(m.value or b"") + len(m.key or b"") for m in batch.messages)
    log(
        f"[fuzz] produced {len(coords)} messages ({size / 1e6:.1f} MB) to {deployment.topic} "
        f"in {time.monotonic() - started:.1f} s"
    )
    return [coord for coord in coords if coord is not None]


@dataclass
class ServiceRun:
    returncode: int | None
    wall: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    stalled: bool
    debug: bool = False  # with --debug, handled errors are logged with tracebacks too

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stdout + self.stderr

    @property
    def crashed(self) -> bool:
        printed = self.traceback and not self.debug
        return printed or (not self.stalled and self.returncode != 0)

    def exceptions(self) -> list[str]:
        """The distinct exception lines of the output (`ValueError: ...`), first seen first."""
        pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")
        found = [line for line in self.stderr.splitlines() if pattern.match(line)]
        return list(dict.fromkeys(line[:300] for line in found))


def _hwm_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(match[1]) / 1024 if match else 0.0


def run_service(
    deployment: Deployment, options: Options, progress: Callable[[float], None], log: Log
) -> ServiceRun:
    """One `cdc-recon run --until-idle`, never restarted; killed at the deadline."""
    out, err = deployment.workdir / "run.out", deployment.workdir / "run.err"
    command = deployment.command(
        "run", "--until-idle", str(options.until_idle), debug=options.debug
    )
    started = time.monotonic()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            command, stdout=stdout, stderr=stderr, env=deployment.env(), cwd=ROOT
        )
    log(f"[fuzz] service pid {process.pid}: {shlex.join(command[1:])}")
    peak, stalled, next_report = 0.0, False, started + 15
    while True:
        try:
            process.wait(0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        peak = max(peak, _hwm_mb(process.pid))
        now = time.monotonic()
        if now >= next_report:
            next_report = now + 15
            progress(now - started)
        if now - started > options.deadline:
            stalled = True
            log(f"[fuzz] no exit after {options.deadline:.0f} s: stalled; SIGTERM, then SIGKILL")
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            break
    wall = time.monotonic() - started
    if peak == 0.0:  # exited before the first poll
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return ServiceRun(
        process.returncode,
        wall,
        peak,
        out.read_text(errors="replace"),
        err.read_text(errors="replace"),
        stalled,
        options.debug,
    )


@dataclass
class Outcome:
    """Where each message ended, read back from the target and the dead-letter topic."""

    ledger: dict[Coord, str]  # coordinate → outcome
    failures: dict[Coord, tuple[str, str, str | None]]  # → reason, detail, dead_letter
    stored: dict[int, int]  # partition → next offset stored in the target
    ends: dict[int, int]  # partition → end offset of the topic
    dead_letters: set[Coord]
    rows: dict[int, tuple[Any, ...]]


def _query(conn: sa.Connection, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(sa.text(sql), params)]


def _pairs(conn: sa.Connection, sql: str, **params: Any) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in _query(conn, sql, **params)]


def read_outcome(deployment: Deployment, partitions: int) -> Outcome:
    c, topic = f'"{deployment.control_schema}"', deployment.topic
    with deployment.engine().connect() as conn:
        conn.execute(sa.text("SET TIME ZONE 'UTC'"))
        ledger = {
            (p, o): outcome
            for p, o, outcome in _query(
                conn,
                f"SELECT kafka_partition, kafka_offset, outcome FROM {c}.ledger WHERE topic = :t",
                t=topic,
            )
        }
        has_column = _query(
            conn,
            "SELECT 1 FROM information_schema.columns WHERE table_schema = :s "
            "AND table_name = 'failures' AND column_name = 'dead_letter'",
            s=deployment.control_schema,
        )
        state = "dead_letter" if has_column else "NULL"
        failures = {
            (p, o): (reason, detail, dl)
            for p, o, reason, detail, dl in _query(
                conn,
                f"SELECT kafka_partition, kafka_offset, reason, detail, {state} "
                f"FROM {c}.failures WHERE topic = :t",
                t=topic,
            )
        }
        stored: dict[int, int] = dict(
            _pairs(
                conn,
                f"SELECT kafka_partition, next_offset FROM {c}.offsets "
                "WHERE group_id = :g AND topic = :t",
                g=deployment.group,
                t=topic,
            )
        )
        rows = {
            row[0]: tuple(row)
            for row in _query(
                conn,
                f"SELECT id, status, amount, note, updated_at::text FROM "
                f'"{deployment.schema}".orders',
            )
        }
    ends = end_offsets(deployment, deployment.topic, partitions)
    return Outcome(ledger, failures, stored, ends, read_dead_letters(deployment), rows)


def _consumer(deployment: Deployment) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": deployment.endpoints.kafka_bootstrap,
            "group.id": f"cdcr-fuzz-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )


def end_offsets(deployment: Deployment, topic: str, partitions: int) -> dict[int, int]:
    consumer = _consumer(deployment)
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def read_dead_letters(deployment: Deployment, timeout: float = 120.0) -> set[Coord]:
    """The (partition, offset) headers of every dead letter for the run's topic."""
    found: set[Coord] = set()
    end = end_offsets(deployment, deployment.dlq, 1)[0]
    if end == 0:
        return found
    consumer = _consumer(deployment)
    consumer.assign([TopicPartition(deployment.dlq, 0, 0)])
    deadline, position = time.monotonic() + timeout, 0
    try:
        while position < end and time.monotonic() < deadline:
            for msg in consumer.consume(500, 1.0):
                if msg.error() is not None:
                    continue
                position = max(position, (msg.offset() or 0) + 1)
                headers = dict(_text(header) for header in msg.headers() or [])
                if headers.get("cdc_recon.topic") == deployment.topic:
                    try:
                        found.add(
                            (int(headers["cdc_recon.partition"]), int(headers["cdc_recon.offset"]))
                        )
                    except (KeyError, ValueError):
                        pass
    finally:
        consumer.close()
    if position < end:
        raise RuntimeError(f"read {position} of {end} dead letters in {timeout:.0f} s")
    return found


def _text(header: Any) -> tuple[str, str]:
    name, value = header
    if isinstance(value, bytes):
        return name, value.decode(errors="replace")
    return name, value or ""


def actual_row(row: tuple[Any, ...]) -> Row | tuple[Any, ...]:
    """The stored row as a `Row`; as raw values when a time cannot be a datetime."""
    moment: Any = row[4]
    if moment is not None:
        try:
            moment = dt.datetime.fromisoformat(moment)
        except ValueError:
            return row  # year 10000, BC: never what a good change left
    return Row(row[0], row[1], row[2], row[3], moment)


@dataclass
class Accounting:
    families: dict[str, str]  # family → expect
    table: dict[str, Counter[str]]  # family → generated / quarantined / applied / ...
    messages: int
    service: ServiceRun
    unaccounted: dict[str, list[Coord]]
    hostile_applied: dict[str, list[Coord]]
    good_quarantined: dict[str, list[tuple[Coord, str]]]
    dlq_missing: dict[str, list[tuple[Coord, str | None]]]
    wrong: list[str]
    forged_lines: list[str]
    positions: list[str]  # per partition: stored offset / end, the next message's family

    def counters(self) -> dict[str, int]:
        return {
            "crashes": int(self.service.crashed),
            "stalls": int(self.service.stalled),
            "unaccounted": sum(map(len, self.unaccounted.values())),
            "wrong_rows": len(self.wrong),
            "dead_letters_missing": sum(map(len, self.dlq_missing.values())),
        }

    @property
    def ok(self) -> bool:
        misclassified = self.hostile_applied or self.good_quarantined or self.forged_lines
        return not any(self.counters().values()) and not misclassified

    def result_line(self) -> str:
        counts = " ".join(f"{name}={n}" for name, n in self.counters().items())
        return (
            f"RESULT fuzz messages={self.messages} {counts} "
            f"peak_rss_mb={self.service.peak_rss_mb:.0f}"
        )

    def problems(self) -> str:
        """What failed, by family and coordinate (partition/offset), for a human."""
        lines = [self.result_line()]
        if self.service.crashed or self.service.stalled:
            lines.append(
                f"service exit {self.service.returncode} after "
                f"{self.service.wall:.0f} s; stderr ends:"
            )
            lines += ["    " + line for line in self.service.stderr.splitlines()[-12:]]
            lines += ["  raised: " + line for line in self.service.exceptions()[:8]]
            lines += ["  " + line for line in self.positions]
        sections: list[tuple[str, dict[str, list[Any]]]] = [
            ("unaccounted", dict(self.unaccounted)),
            ("hostile_applied", dict(self.hostile_applied)),
            ("good_quarantined", dict(self.good_quarantined)),
            ("dead_letters_missing", dict(self.dlq_missing)),
        ]
        for title, found in sections:
            for family_name, items in sorted(found.items()):
                shown = ", ".join(_coord(item) for item in items[:SHOWN])
                lines.append(f"{title}: {family_name} x{len(items)} at {shown}")
        lines += ["wrong row: " + line for line in self.wrong[:20]]
        lines += ["forged log line: " + line for line in self.forged_lines[:5]]
        return "\n".join(lines)


def _coord(item: Any) -> str:
    if isinstance(item[0], tuple):  # (coordinate, why)
        return f"p{item[0][0]}/{item[0][1]} ({str(item[1])[:80]!r})"
    return f"p{item[0]}/{item[1]}"


def account(
    batch: Batch, coords: list[Coord], service: ServiceRun, outcome: Outcome, partitions: int
) -> Accounting:
    table: dict[str, Counter[str]] = defaultdict(Counter)
    unaccounted: dict[str, list[Coord]] = defaultdict(list)
    applied: dict[str, list[Coord]] = defaultdict(list)
    quarantined: dict[str, list[tuple[Coord, str]]] = defaultdict(list)
    by_coord: dict[Coord, FuzzMessage] = {}
    for message, coord in zip(batch.messages, coords, strict=True):
        by_coord[coord] = message
        counts = table[message.family]
        counts["generated"] += 1
        in_ledger, failure = coord in outcome.ledger, outcome.failures.get(coord)
        skipped = message.expect == SKIP and coord[1] < outcome.stored.get(coord[0], 0)
        counts["applied"] += in_ledger
        counts["quarantined"] += failure is not None
        counts["skipped"] += skipped and not in_ledger and failure is None
        if not (in_ledger or failure or skipped):
            counts["unaccounted"] += 1
            unaccounted[message.family].append(coord)
        if in_ledger and message.expect != APPLY:
            applied[message.family].append(coord)
        if failure is not None and message.expect != QUARANTINE:
            quarantined[message.family].append((coord, f"{failure[0]}: {failure[1]}"))
    dlq_missing: dict[str, list[tuple[Coord, str | None]]] = defaultdict(list)
    for coord, (_reason, _detail, state) in outcome.failures.items():
        if coord not in outcome.dead_letters and state != "too_large":
            family_name = by_coord[coord].family if coord in by_coord else "?"
            dlq_missing[family_name].append((coord, state))
    return Accounting(
        batch.families,
        dict(table),
        len(batch.messages),
        service,
        dict(unaccounted),
        dict(applied),
        dict(quarantined),
        dict(dlq_missing),
        wrong_rows(batch, outcome, by_coord),
        forged(service),
        positions(outcome, by_coord, partitions),
    )


def wrong_rows(batch: Batch, outcome: Outcome, by_coord: dict[Coord, FuzzMessage]) -> list[str]:
    """Each target row that is not what the good changes alone leave: the columns that
    differ, the hostile messages of its key that reached the ledger, the families aimed
    at it."""
    aimed: dict[int, Counter[str]] = defaultdict(Counter)
    for message in batch.messages:
        if message.expect == QUARANTINE and message.target is not None:
            aimed[message.target][message.family] += 1
    applied: dict[int, list[str]] = defaultdict(list)
    for coord, message in by_coord.items():
        if coord in outcome.ledger and message.expect != APPLY and message.target is not None:
            applied[message.target].append(f"{message.family}@p{coord[0]}/{coord[1]}")
    found = []
    for key in sorted(set(batch.expected) | set(outcome.rows), key=str):
        want = batch.expected.get(key)
        got = actual_row(outcome.rows[key]) if key in outcome.rows else None
        if want == got:
            continue
        culprits = ", ".join(applied[key][:4]) or "none"
        near = ", ".join(name for name, _ in aimed[key].most_common(6)) or "none"
        found.append(
            f"id {key}: {_difference(want, got)}; hostile in the ledger: {culprits}; "
            f"aimed at it: {near}"
        )
    return found


def _difference(want: Row | None, got: Row | tuple[Any, ...] | None) -> str:
    if want is None or got is None:
        return f"expected {_short(want)}, found {_short(got)}"
    if not isinstance(got, Row):
        return f"expected {_short(want)}, found unreadable {_short(got)}"
    columns = ("status", "amount", "note", "updated_at")
    return "; ".join(
        f"{column} expected {_short(getattr(want, column))}, found {_short(getattr(got, column))}"
        for column in columns
        if getattr(want, column) != getattr(got, column)
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 100 else text[:80] + f"... ({len(text)} chars)"


def forged(service: ServiceRun) -> list[str]:
    """Lines of the service's output that a line break in a name or value began."""
    lines = re.split(r"\r\n|\r|\n", service.stdout + service.stderr)
    return [line[:160] for line in lines if line.startswith(FORGED[:23])]


def positions(outcome: Outcome, by_coord: dict[Coord, FuzzMessage], partitions: int) -> list[str]:
    found = []
    for p in range(partitions):
        stored, end = outcome.stored.get(p), outcome.ends.get(p, 0)
        nxt = by_coord.get((p, stored if stored is not None else 0))
        at = "" if nxt is None else f"; next message {nxt.family}"
        found.append(f"partition {p}: stored offset {stored} of end {end}{at}")
    return found


def render(accounting: Accounting) -> list[str]:
    """The per-family table and the lines before RESULT."""
    head = (
        f"{'family':<26} {'expect':<10} {'generated':>9} {'quarantined':>11} "
        f"{'applied':>7} {'skipped':>7} {'unaccounted':>11}"
    )
    lines = [head, "-" * len(head)]
    order = sorted(
        accounting.table, key=lambda f: (accounting.families[f] != APPLY, accounting.families[f], f)
    )
    for name in order:
        c = accounting.table[name]
        lines.append(
            f"{name:<26} {accounting.families[name]:<10} {c['generated']:>9} "
            f"{c['quarantined']:>11} {c['applied']:>7} {c['skipped']:>7} "
            f"{c['unaccounted']:>11}"
        )
    service = accounting.service
    lines.append(
        f"service: exit {service.returncode}, wall {service.wall:.1f} s, "
        f"peak RSS {service.peak_rss_mb:.0f} MB, traceback {service.traceback}"
    )
    summary = [line for line in service.stdout.splitlines() if "stopped after" in line]
    lines += [f"service said: {line}" for line in summary[-1:]]
    lines += accounting.problems().splitlines()[1:]
    misclassified = ", ".join(
        f"{name}={len(items)}" for name, items in sorted(accounting.hostile_applied.items())
    )
    lines.append(
        f"hostile_applied={sum(map(len, accounting.hostile_applied.values()))} "
        f"good_quarantined={sum(map(len, accounting.good_quarantined.values()))} "
        f"forged_log_lines={len(accounting.forged_lines)}"
        + (f" ({misclassified})" if misclassified else "")
    )
    lines.append(accounting.result_line())
    return lines


def fuzz(options: Options, endpoints: Endpoints, log: Log = print) -> Accounting:
    """Generate, produce, run the service once, account; the whole bench, for the test too."""
    batch = generate(
        seed=options.seed,
        good=options.good,
        hostile=options.hostile,
        partitions=options.partitions,
        keys=options.keys,
        minimum=options.minimum,
        only=options.only,
    )
    kinds = Counter(message.expect for message in batch.messages)
    log(
        f"[fuzz] seed {options.seed}: {len(batch.messages)} messages ({dict(kinds)}) in "
        f"{len(batch.families)} families, {len(batch.expected)} rows expected"
    )
    deployment = Deployment(endpoints)
    deployment.create(options)
    log(
        f"[fuzz] target schema {deployment.schema}, control schema {deployment.control_schema},"
        f" topic {deployment.topic}, group {deployment.group}, config {deployment.config_path}"
    )
    accounting: Accounting | None = None
    try:
        coords = produce(deployment, batch, options, log)

        def progress(elapsed: float) -> None:
            stored = read_stored(deployment)
            log(
                f"[fuzz] {elapsed:.0f} s: consumed {sum(stored.values())} of "
                f"{len(coords)} (stored offsets {stored})"
            )

        service = run_service(deployment, options, progress, log)
        log(f"[fuzz] service exited {service.returncode} after {service.wall:.1f} s; accounting")
        outcome = read_outcome(deployment, options.partitions)
        accounting = account(batch, coords, service, outcome, options.partitions)
        return accounting
    finally:
        keep = options.keep if options.keep is not None else not (accounting and accounting.ok)
        if keep:
            log(
                f"[fuzz] kept {deployment.schema}, {deployment.control_schema}, "
                f"{deployment.topic}, {deployment.dlq}, {deployment.workdir}"
            )
        else:
            deployment.drop()
        deployment.engine().dispose()


def read_stored(deployment: Deployment) -> dict[int, int]:
    try:
        with deployment.engine().connect() as conn:
            return dict(
                _pairs(
                    conn,
                    f"SELECT kafka_partition, next_offset FROM "
                    f'"{deployment.control_schema}".offsets WHERE group_id = :g',
                    g=deployment.group,
                )
            )
    except sa.exc.DBAPIError:
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Options()
    parser.add_argument("--hostile", type=int, default=defaults.hostile)
    parser.add_argument("--good", type=int, default=defaults.good)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--keys", type=int, default=defaults.keys)
    parser.add_argument(
        "--minimum",
        type=int,
        default=defaults.minimum,
        help="messages per hostile family, at least",
    )
    parser.add_argument("--until-idle", type=float, default=defaults.until_idle)
    parser.add_argument(
        "--deadline",
        type=float,
        default=defaults.deadline,
        help="seconds before the service counts as stalled",
    )
    parser.add_argument("--dlq-max-message-bytes", type=int, default=defaults.dlq_max_message_bytes)
    parser.add_argument(
        "--only", default="", help="comma-separated hostile families (default: all)"
    )
    parser.add_argument("--debug", action="store_true", help="run the service with --debug")
    parser.add_argument(
        "--keep",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep schemas and topics (default: only when something failed)",
    )
    args = parser.parse_args(argv)
    options = Options(
        hostile=args.hostile,
        good=args.good,
        seed=args.seed,
        partitions=args.partitions,
        keys=args.keys,
        minimum=args.minimum,
        until_idle=args.until_idle,
        deadline=args.deadline,
        dlq_max_message_bytes=args.dlq_max_message_bytes,
        debug=args.debug,
        keep=args.keep,
        only=tuple(name for name in args.only.split(",") if name),
    )
    accounting = fuzz(options, Endpoints.from_env())
    for line in render(accounting):
        print(line)
    return 0 if accounting.ok else 1


if __name__ == "__main__":
    sys.exit(main())
