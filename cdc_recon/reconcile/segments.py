"""Key ranges and their bisection: pure functions, no database.

A segment is a half-open key range [lo, hi) (an open end is None). Checking a segment
asks each database for the row count and checksum of each of its sub-segments in one
query (split at `thresholds`); the sub-segments whose counts or checksums differ are
the next segments, until one is small enough to fetch and diff row by row.

    >>> integer_thresholds(0, 100, 4)
    [25, 50, 75]
    >>> mismatched({0: (5, '9'), 1: (5, '7')}, {0: (5, '9'), 1: (5, '8')})
    [(1, 5)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KeyValues = tuple[Any, ...]
Buckets = Mapping[int, tuple[int, str]]


@dataclass(frozen=True)
class Segment:
    """[lo, hi) with at most `rows` rows on the bigger side (an estimate at first)."""

    lo: KeyValues | None
    hi: KeyValues | None
    rows: int
    depth: int = 0

    def __post_init__(self) -> None:
        if self.rows < 0:
            raise ValueError("rows cannot be negative")
        both = self.lo is not None and self.hi is not None
        if both and len(self.lo or ()) != len(self.hi or ()):
            raise ValueError("lo and hi must have the same number of key columns")


def integer_thresholds(lo: int, hi: int, parts: int) -> list[int]:
    """Up to `parts - 1` increasing split points strictly inside [lo, hi)."""
    if parts < 2 or hi - lo < 2:
        return []
    width = (hi - lo) / parts
    points = sorted({lo + math.ceil(width * i) for i in range(1, parts)})
    return [p for p in points if lo < p < hi]


FIRST_LEVEL_BUCKETS = 16384


def stripe_count(estimated_rows: int, segment_rows: int, workers: int) -> int:
    """First-level segments: one per two workers (each is read on both sides at once),
    so that a big table is read by few large scans, but none under `segment_rows` rows."""
    return max(1, min(math.ceil(workers / 2), math.ceil(max(estimated_rows, 1) / segment_rows)))


def stripes(
    points: Sequence[KeyValues], parts: int, rows: int
) -> list[tuple[Segment, list[KeyValues]]]:
    """`parts` first-level segments over sorted split `points`, each with the points
    strictly inside it as its thresholds; the points between segments bound them.

    >>> [(s.lo, s.hi, t) for s, t in stripes([(1,), (2,), (3,)], 2, 40)]
    [(None, (2,), [(1,)]), ((2,), None, [(3,)])]
    """
    n = len(points)
    cuts = sorted({(i * n) // max(parts, 1) for i in range(1, max(parts, 1))} - {n})
    edges = [-1, *cuts, n]
    each = math.ceil(rows / (len(edges) - 1))
    found = []
    for k in range(len(edges) - 1):
        lo = points[edges[k]] if k > 0 else None
        hi = points[edges[k + 1]] if k < len(edges) - 2 else None
        found.append((Segment(lo, hi, each), list(points[edges[k] + 1 : edges[k + 1]])))
    return found


def mismatched(source: Buckets, target: Buckets) -> list[tuple[int, int]]:
    """(bucket, rows on the bigger side) of every bucket whose count or checksum differ."""
    empty = (0, "0")
    found = []
    for bucket in sorted(source.keys() | target.keys()):
        left, right = source.get(bucket, empty), target.get(bucket, empty)
        if left[0] != right[0] or _checksum(left[1]) != _checksum(right[1]):
            found.append((bucket, max(left[0], right[0])))
    return found


def _checksum(text: str | None) -> int:
    return int(text or 0)


def children(
    parent: Segment, thresholds: Sequence[KeyValues], buckets: Sequence[tuple[int, int]]
) -> list[Segment]:
    """The sub-segments of `parent` (split at `thresholds`) numbered in `buckets`."""
    bounds: list[KeyValues | None] = [parent.lo, *thresholds, parent.hi]
    return [
        Segment(bounds[i], bounds[i + 1], rows, parent.depth + 1)
        for i, rows in buckets
        if 0 <= i < len(bounds) - 1
    ]


def first_segments(
    thresholds: Sequence[KeyValues],
    rows: int,
    lo: KeyValues | None = None,
    hi: KeyValues | None = None,
) -> list[Segment]:
    """The first level: [lo, t0), [t0, t1), ... [tn, hi), rows shared evenly."""
    bounds: list[KeyValues | None] = [lo, *thresholds, hi]
    each = math.ceil(rows / (len(bounds) - 1))
    return [Segment(bounds[i], bounds[i + 1], each) for i in range(len(bounds) - 1)]
