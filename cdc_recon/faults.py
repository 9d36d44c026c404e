"""Crash points for fault-injection runs (bench/chaos.py, the tests): off unless asked for.

A chaos run must kill a process at exact moments that a random `kill -9` rarely hits:
between a batch's target commit and its Kafka commit, while a sweep holds its staged
classification uncommitted, between two batches of a `replay`, in the middle of a
`reconcile --apply` transaction. Each such moment calls `crash_point(name)`; with

    CDC_RECON_TEST_CRASH_AT="<name>:<n>[,<name>:<n>...]"

in the environment the process SIGKILLs itself (no cleanup, no `finally`, exactly as a
`kill -9`) the n-th time it reaches `<name>`. Without the variable `crash_point` is a
dictionary lookup and nothing else. The points:

    apply.db_commit        a batch's target transaction committed; dead letters and the
                           Kafka commit not done yet (apply/service.py, steps 3 -> 4)
    sweep.staged           a sweep step classified its window, not yet committed
                           (sweep/sweeper.py)
    replay.batch           a replay batch was applied and committed (replay/sinks.py)
    reconcile.correction   a correction and its audit row written, their transaction
                           not yet committed (reconcile/corrections.py)

    >>> crash_point("apply.db_commit")  # without CDC_RECON_TEST_CRASH_AT: nothing
"""

from __future__ import annotations

import logging
import os
import signal

LOG = logging.getLogger("cdc_recon.faults")
ENV = "CDC_RECON_TEST_CRASH_AT"
POINTS = ("apply.db_commit", "sweep.staged", "replay.batch", "reconcile.correction")


def parse(text: str) -> dict[str, int]:
    """`"a:2,b:1"` -> {"a": 2, "b": 1}; an unknown point or a bad count is an error."""
    wanted: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition(":")
        if name not in POINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{ENV}: {part!r}: want <point>:<n>, n >= 1, point in {POINTS}")
        wanted[name] = int(count)
    return wanted


_WANTED = parse(os.environ.get(ENV, ""))
_REACHED: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if `name` was reached as often as CDC_RECON_TEST_CRASH_AT asks."""
    if name not in _WANTED:
        return
    _REACHED[name] = _REACHED.get(name, 0) + 1
    if _REACHED[name] >= _WANTED[name]:
        LOG.warning("fault injection: SIGKILL at %s (time %d)", name, _REACHED[name])
        logging.shutdown()  # the line above is what the run's log shows of the crash
        os.kill(os.getpid(), signal.SIGKILL)
