"""The gauges the status poller sets from the control tables (`cdc_recon.monitor.poller`).

They describe the whole deployment, not this instance: every instance reading the same
target reports the same values. Defined here, beside the one module that sets them.
"""

from __future__ import annotations

from prometheus_client import Gauge

LEDGER_ROWS = Gauge(
    "cdc_recon_ledger_rows", "Rows in the processed-change ledger (estimated when large)."
)
OPEN_FAILURES = Gauge(
    "cdc_recon_open_failures", "Quarantined messages not resolved yet, by reason.", ["reason"]
)
MISSED_CHANGES = Gauge(
    "cdc_recon_missed_changes",
    "Missed changes recorded in the target, by replay status.",
    ["status"],
)
WATERMARK_AGE = Gauge(
    "cdc_recon_sweeper_watermark_age_seconds",
    "Seconds since the end of the last window the sweeper checked (0: no watermark yet).",
)
LEDGER_PARTITIONS = Gauge(
    "cdc_recon_ledger_partitions", "Partitions of the ledger (one per hour, day or week)."
)
LEDGER_PARTITION_ROWS = Gauge(
    "cdc_recon_ledger_partition_rows",
    "Rows of each ledger partition (the planner's estimate; 0 before its first analyze).",
    ["partition"],
)
LEDGER_OLDEST_KEPT = Gauge(
    "cdc_recon_ledger_oldest_kept_timestamp_seconds",
    "Start of the source time the ledger's oldest partition holds (0: no partition).",
)
LEDGER_NEXT_DROP = Gauge(
    "cdc_recon_ledger_next_drop_timestamp_seconds",
    "When the oldest partition is old enough to drop (0: none, or not before the "
    "sweeper's watermark passes it).",
)
COMPLETENESS_RATIO = Gauge(
    "cdc_recon_completeness_ratio",
    "Of the source changes in windows the sweeper closed, the share applied or superseded "
    "(missed ones count once replayed), per source table and (all).",
    ["table"],
)
OLDEST_UNVERIFIED = Gauge(
    "cdc_recon_oldest_unverified_change_seconds",
    "Age of the oldest source change not proven applied: the oldest still missing, else "
    "the sweeper's watermark, per source table and (all).",
    ["table"],
)
