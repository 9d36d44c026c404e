"""Crash points (cdc_recon/faults.py): off by default, a SIGKILL at the n-th pass when asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from cdc_recon import faults

SCRIPT = """
from cdc_recon.faults import crash_point
for i in range(1, 6):
    print(i, flush=True)
    crash_point("replay.batch")
"""


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != faults.ENV}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env={**full, **env}, capture_output=True, text=True
    )


def test_parse() -> None:
    assert faults.parse("") == {}
    assert faults.parse("apply.db_commit:3, sweep.staged:1") == {
        "apply.db_commit": 3,
        "sweep.staged": 1,
    }
    for bad in ("nowhere:1", "apply.db_commit", "apply.db_commit:0", "replay.batch:x"):
        with pytest.raises(ValueError, match="CDC_RECON_TEST_CRASH_AT"):
            faults.parse(bad)


def test_off_by_default() -> None:
    done = run({})
    assert done.returncode == 0 and done.stdout.split() == ["1", "2", "3", "4", "5"]


def test_sigkill_at_the_nth_pass() -> None:
    done = run({faults.ENV: "replay.batch:3"})
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["1", "2", "3"]
    assert "fault injection: SIGKILL at replay.batch (time 3)" in done.stderr


def test_another_point_does_not_fire() -> None:
    assert run({faults.ENV: "sweep.staged:1"}).returncode == 0
