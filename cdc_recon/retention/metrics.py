"""The retention's Prometheus metrics: what the pruning rounds of this instance removed.

`observed_prunes(prune_once)` counts each round (`cdc_recon.run` wraps the pruner
thread's round with it); dry runs are not counted. What the whole deployment pruned
last, and when, is in `prune_state` (`cdc-recon status`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from cdc_recon.retention.pruner import OK, PruneRound

PRUNED_ROWS = Counter(
    "cdc_recon_pruned_rows",
    "Control-table rows the pruner of this instance removed, by task (table).",
    ["task"],
)
PRUNE_TASKS = Counter(
    "cdc_recon_prune_tasks",
    "Pruning task runs of this instance, by task and outcome (ok, busy, off, failed).",
    ["task", "status"],
)
PRUNE_ROUNDS = Counter(
    "cdc_recon_prune_rounds",
    "Pruning rounds of this instance, by status (ok, skipped: another instance prunes, "
    "failed: the target could not be reached).",
    ["status"],
)


def observe_round(pruned: PruneRound) -> None:
    """Count one round and each of its tasks (a dry run changes nothing: not counted)."""
    if pruned.dry_run:
        return
    PRUNE_ROUNDS.labels(status="ok" if pruned.status == OK else "skipped").inc()
    for result in pruned.results:
        PRUNE_TASKS.labels(task=result.task, status=result.status).inc()
        if result.rows:
            PRUNED_ROWS.labels(task=result.task).inc(result.rows)


def observed_prunes(prune: Callable[..., PruneRound]) -> Callable[..., PruneRound]:
    """`prune` (`pruner.prune_once`) whose rounds are counted; a raised error counts as
    a failed round."""

    def run(*args: Any, **kwargs: Any) -> PruneRound:
        try:
            pruned = prune(*args, **kwargs)
        except Exception:
            PRUNE_ROUNDS.labels(status="failed").inc()
            raise
        observe_round(pruned)
        return pruned

    return run
