"""What a table's recent changes look like, per time bucket: pure, no database, no model.

The ledger says, for every applied change, its table, operation, outcome, key,
transaction and when it happened at the source and was applied. Per table and bucket
(an hour by default) that becomes the figures a data engineer watches on a CDC
pipeline, which are the anomaly check's features:

    changes              how many (log scale in the model: volume spans decades)
    insert/update/delete share   the operation mix (snapshot reads count as inserts)
    superseded share     changes that arrived after a newer one of their key (reordering,
                         replays, a connector re-reading)
    keys per change      distinct keys / changes: 1 = every change a new key; low = a few
                         hot keys rewritten again and again
    changes per tx       source transaction size (log; 0 when the format has no tx id)
    apply lag p50        median seconds from the source commit to the apply (log)

A bucket without changes is a vector of zeros: a table that goes quiet is as visible as
one that bursts.

    >>> a = BucketActivity("public.orders", 3, changes=10, inserts=2, updates=8, keys=5)
    >>> dict(zip(FEATURES, display(a)))["keys per change"]
    0.5
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

FEATURES = (
    "changes",
    "insert share",
    "update share",
    "delete share",
    "superseded share",
    "keys per change",
    "changes per tx",
    "apply lag p50 s",
)
LOGGED = frozenset({"changes", "changes per tx", "apply lag p50 s"})
Vector = tuple[float, ...]
IDLE: Vector = (0.0,) * len(FEATURES)


@dataclass(frozen=True)
class BucketActivity:
    """One table's ledger rows in one time bucket (index from the window's start)."""

    table: str
    bucket: int
    changes: int
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    superseded: int = 0
    keys: int = 0
    transactions: int = 0
    lag_p50: float | None = None

    def __post_init__(self) -> None:
        if self.bucket < 0 or self.changes < 0:
            raise ValueError("bucket and changes cannot be negative")
        if self.inserts + self.updates + self.deletes > self.changes:
            raise ValueError("more inserts, updates and deletes than changes")


def display(activity: BucketActivity | None) -> Vector:
    """The features in their own units (counts, shares, seconds); zeros when idle."""
    if activity is None or activity.changes == 0:
        return IDLE
    n = activity.changes
    per_tx = n / activity.transactions if activity.transactions else 0.0
    return (
        float(n),
        activity.inserts / n,
        activity.updates / n,
        activity.deletes / n,
        activity.superseded / n,
        activity.keys / n,
        per_tx,
        max(activity.lag_p50 or 0.0, 0.0),
    )


def model_vector(shown: Vector) -> Vector:
    """What the model sees: volumes on a log scale, shares as they are."""
    return tuple(
        math.log1p(v) if name in LOGGED else v for name, v in zip(FEATURES, shown, strict=True)
    )


def per_table(rows: Iterable[BucketActivity], buckets: int) -> dict[str, list[Vector]]:
    """Per table seen in `rows`, one displayed vector per bucket of the window, idle
    buckets included, in time order."""
    found: dict[str, list[Vector]] = {}
    for row in rows:
        if not 0 <= row.bucket < buckets:
            raise ValueError(f"bucket {row.bucket} outside 0..{buckets - 1}")
        found.setdefault(row.table, [IDLE] * buckets)[row.bucket] = display(row)
    return dict(sorted(found.items()))


def deviations(vector: Vector, history: Sequence[Vector], shown: int = 3) -> list[dict[str, Any]]:
    """The features of `vector` furthest from the history's typical values, in robust
    standard deviations (median and MAD of the model's scale; an unvarying feature
    counts as off by its distance over a small floor)."""
    model = model_vector(vector)
    past = [model_vector(v) for v in history]
    scored = []
    for i, name in enumerate(FEATURES):
        column = [v[i] for v in past]
        median = statistics.median(column)
        mad = statistics.median(abs(x - median) for x in column) * 1.4826
        z = abs(model[i] - median) / max(mad, 0.05)
        scored.append((round(z, 1), name, vector[i], statistics.median(v[i] for v in history)))
    scored.sort(key=lambda item: -item[0])
    return [
        {"feature": name, "value": _round(value), "typical": _round(typical), "deviation": z}
        for z, name, value, typical in scored[:shown]
    ]


def _round(value: float) -> float:
    return round(value, 3) if abs(value) < 1000 else round(value)
