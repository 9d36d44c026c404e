"""CPU seconds of the processes a benchmark run leans on, read from /proc (Linux).

On a machine other engineers load, events/s swing with their load; the CPU a run
spends per event swings far less, so `bench/apply.py` prints both. `cluster_cpu` is the
whole PostgreSQL cluster's (its postmaster's children alive now, plus those that ended,
which the kernel adds to the postmaster's `cutime`/`cstime`), found from a backend's
parent pid; `process_cpu` is one process's (the JDBC sink's JVM).
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def process_cpu(pid: int, children: bool = False) -> float:
    fields = _stat(pid)
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def postmaster_pid(engine: sa.Engine) -> int | None:
    """The postmaster of the target's cluster, when it runs on this machine."""
    with engine.connect() as conn:
        backend = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
    try:
        return int(_stat(backend)[1])  # ppid
    except (OSError, ValueError):
        return None


def cluster_cpu(postmaster: int) -> float:
    total = process_cpu(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # ended while we read
        if fields[1] == str(postmaster):
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total
