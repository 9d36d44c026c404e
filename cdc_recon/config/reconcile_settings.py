"""The `reconcile:` section of the settings: what `cdc-recon reconcile` checks and how.

    reconcile:
      workers: 2                 # threads checking tables and segments (queries at once per side)
      hash: fast64               # fast64 (typed 64-bit hashes) | md5 (portable across servers)
      segment_rows: 100000       # fewest rows per first-level segment (one per two workers)
      bisection_factor: 2048     # most sub-segments per check below the first level
      bisection_threshold: 64    # segments this small are fetched and diffed row by row
      tables:
        - source: public.customers          # target, key: from `tables:` or the primary key
          exclude: [updated_at, version]    # not compared
          group_by: [country]               # counts per group
          date_bucket: {column: created_at, unit: day}
          updated_column: updated_at        # incremental mode
          temporal_column: updated_at       # temporal checks
      rules:
        - name: order totals
          source_query: SELECT customer_id, sum(total) FROM public.orders GROUP BY 1
          target_query: SELECT customer_id, sum(total) FROM public.orders GROUP BY 1
          tolerance: 0.01
      foreign_keys:
        - {table: public.orders, columns: [customer_id], references: public.customers,
           ref_columns: [id]}
      anomalies:                 # --check anomalies, with the `ml` extra installed
        lookback: 604800         # seconds of ledger history learned from (7 days)
        bucket: 3600             # seconds per time bucket
        recent: 3600             # the latest buckets, scored against the history before
        min_buckets: 24          # a table with less history is not scored
        contamination: auto      # or the expected share of anomalous buckets, (0, 0.5]
        min_deviation: 3.0       # a reported bucket has a feature this many robust SDs off

Rule queries are SQL written by the operator in the configuration; they run as given,
in read-only transactions. Every other statement is built by `cdc_recon.reconcile`
from quoted identifiers and bound parameters.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _table_name(value: str | None) -> str | None:
    if value is not None and not _TABLE.match(value):
        raise ValueError(f"not a table identifier: {value!r}")
    return value


class DateBucket(_Section):
    column: str
    unit: Literal["hour", "day", "week", "month", "year"] = "day"


class ReconcileTable(_Section):
    """One table to reconcile; `target` and `key` default to the `tables:` mapping."""

    source: str
    target: str | None = None
    key: tuple[str, ...] = ()
    exclude: tuple[str, ...] = Field((), description="source columns not compared")
    group_by: tuple[str, ...] = ()
    date_bucket: DateBucket | None = None
    updated_column: str | None = Field(None, description="change time for incremental mode")
    temporal_column: str | None = Field(None, description="timestamp for temporal checks")
    future_tolerance: float = Field(300.0, ge=0, description="seconds a time may be ahead")

    @field_validator("source", "target")
    @classmethod
    def _tables_are_identifiers(cls, value: str | None) -> str | None:
        return _table_name(value)

    @model_validator(mode="after")
    def _key_not_excluded(self) -> ReconcileTable:
        if set(self.key) & set(self.exclude):
            raise ValueError("key columns cannot be excluded")
        return self


class BusinessRule(_Section):
    """Two queries returning key columns then one value; equal within `tolerance`."""

    name: str = Field(min_length=1)
    source_query: str = Field(min_length=1)
    target_query: str = Field(min_length=1)
    tolerance: float = Field(0.0, ge=0, description="absolute difference allowed")
    severity: Literal["low", "medium", "high", "critical"] = "high"


class ForeignKey(_Section):
    """A reference the target must satisfy (referential integrity check)."""

    table: str
    columns: tuple[str, ...] = Field(min_length=1)
    references: str
    ref_columns: tuple[str, ...] = Field(min_length=1)

    @field_validator("table", "references")
    @classmethod
    def _tables_are_identifiers(cls, value: str) -> str:
        return _table_name(value) or value

    @model_validator(mode="after")
    def _same_arity(self) -> ForeignKey:
        if len(self.columns) != len(self.ref_columns):
            raise ValueError("columns and ref_columns differ in length")
        return self


class ScheduleSettings(_Section):
    """Jobs inside `cdc-recon run`, like a migration runbook; seconds, null disables."""

    enabled: bool = False
    counts: float | None = Field(15 * 60.0, gt=0)
    checksums: float | None = Field(4 * 3600.0, gt=0)
    deep: float | None = Field(24 * 3600.0, gt=0, description="every check, all tables")
    rules: float | None = Field(7 * 24 * 3600.0, gt=0)


class AnomalySettings(_Section):
    """`--check anomalies` (the `ml` extra): IsolationForest over the ledger, per table,
    in time buckets; the latest `recent` seconds are scored against the history before."""

    lookback: float = Field(7 * 86400.0, gt=0, description="seconds of ledger learned from")
    bucket: float = Field(3600.0, ge=1, description="seconds per time bucket")
    recent: float = Field(3600.0, gt=0, description="latest seconds whose buckets are scored")
    min_buckets: int = Field(24, ge=2, description="history buckets a table needs to be scored")
    contamination: float | Literal["auto"] = Field("auto", description="IsolationForest's")
    min_deviation: float = Field(
        3.0, ge=0, description="robust z-score one feature of a reported bucket must reach"
    )
    seed: int = Field(0, description="random_state of the forest: runs are repeatable")

    @field_validator("contamination")
    @classmethod
    def _fraction(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not 0 < value <= 0.5:
            raise ValueError("contamination must be 'auto' or in (0, 0.5]")
        return value

    @model_validator(mode="after")
    def _windows(self) -> AnomalySettings:
        if self.recent < self.bucket or self.lookback < self.recent + self.bucket:
            raise ValueError("need bucket <= recent < lookback (with a bucket of history)")
        if self.lookback / self.bucket > 100_000:
            raise ValueError("lookback / bucket is over 100,000 buckets")
        return self


class ReconcileSettings(_Section):
    """The `reconcile:` section (see the module docstring)."""

    tables: tuple[ReconcileTable, ...] = ()
    rules: tuple[BusinessRule, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    workers: int = Field(2, ge=1, le=64)
    hash: Literal["fast64", "md5"] = "fast64"
    segment_rows: int = Field(100_000, ge=10)
    bisection_factor: int = Field(2048, ge=2, le=8192)
    bisection_threshold: int = Field(64, ge=1)
    sample_confidence: float = Field(0.95, gt=0, lt=1)
    sample_margin: float = Field(0.01, gt=0, lt=1)
    sample_proportion: float = Field(0.5, gt=0, lt=1, description="expected error rate")
    correction_batch: int = Field(500, ge=1, description="corrections per transaction")
    incremental_overlap: float = Field(60.0, ge=0, description="seconds re-read before a run")
    schedule: ScheduleSettings = ScheduleSettings()
    anomalies: AnomalySettings = AnomalySettings()
