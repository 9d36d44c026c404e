"""The `retention:` and `key_state:` sections: how long each control table keeps rows.

    retention:
      enabled: true            # prune inside `cdc-recon run` (one instance at a time)
      interval: 3600           # seconds between pruning rounds
      batch_size: 5000         # most rows one delete transaction removes
      lock_timeout: 1.0        # seconds a delete waits for a lock before giving up
      failures: 2592000        # resolved or retried failures (status not open): 30 days
      missed_changes: 2592000  # replayed missed changes: 30 days
      sweep_runs: 2592000      # sweeper runs: 30 days
      recon_runs: 2592000      # reconcile runs, results, findings and jobs: 30 days
      review: 2592000          # resolved review-queue rows: 30 days
      recon_corrections: 7776000  # the corrections audit: 90 days
    key_state:
      delete_retention: topics # delete markers: the topics' retention, `never`, or seconds

Every duration is in seconds; `null` keeps that table's rows forever. Open failures,
pending or failed missed changes and open review rows are never pruned: they are work
left to do. Corrections keep 90 days because they are the audit trail of what
reconciliation changed in the target (before and after image); a quarter covers a
migration and the review after it. Findings that a kept correction or review row points
at are kept with it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

DAY = 86400.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _keep(days: float, what: str) -> float | None:
    return Field(days * DAY, gt=0, description=f"seconds {what} are kept (null: forever)")


class RetentionSettings(_Section):
    """The `retention:` section (see the module docstring)."""

    enabled: bool = Field(True, description="prune the control tables inside `cdc-recon run`")
    interval: float = Field(3600.0, gt=0, description="seconds between pruning rounds")
    batch_size: int = Field(5000, gt=0, description="most rows per delete transaction")
    lock_timeout: float = Field(
        1.0, gt=0, le=60, description="seconds a delete waits for a lock, then gives up the round"
    )
    failures: float | None = _keep(30, "resolved or retried failures")
    missed_changes: float | None = _keep(30, "replayed missed changes")
    sweep_runs: float | None = _keep(30, "sweeper runs")
    recon_runs: float | None = _keep(30, "reconcile runs, results, findings and jobs")
    review: float | None = _keep(30, "resolved review-queue rows")
    recon_corrections: float | None = _keep(90, "corrections (the audit trail)")


class KeyStateSettings(_Section):
    """The `key_state:` section: how long a delete is remembered (promise P3).

    `topics` (the default) keeps a delete marker as long as Kafka can still deliver an
    older event of its key: the longest `retention.ms` of the topics read, plus the
    topic's `segment.ms` (a segment is deleted only when its newest message expires)
    and an hour of slack; a topic that keeps messages forever (`retention.ms` -1 or
    compaction only) means markers are never pruned.
    """

    delete_retention: Annotated[float, Field(gt=0)] | Literal["topics", "never"] = Field(
        "topics", description="seconds delete markers are kept, `topics` or `never`"
    )
