"""Segment checksums inside each database, bisected down to the exact differing keys.

1. Split the key space into first-level segments, one per two workers but none under
   `segment_rows` rows (`stripe_count`): by arithmetic on min/max for a one-column
   integer key, else by key quantiles of the bigger side (every n-th key in key order),
   so that a big table is read by a few sequential scans rather than many index ranges.
2. Check a segment: ONE query per side, both sides at once, returns for each of its
   sub-segments (up to `FIRST_LEVEL_BUCKETS` at the first level for a one-column key,
   `bisection_factor` below) the row count and the sum of 64-bit row hashes, computed
   in that database. Sub-segments whose counts or sums differ are the next segments.
3. A segment of at most `bisection_threshold` rows is fetched from both sides
   (normalised texts only) and diffed in Python (`diff.diff_rows`).
4. Keys seen on one side only are looked up by key on the other side before they are
   reported, so that a collation difference between servers cannot fake a missing row.

Segments are checked on the run's bounded pool of `workers` threads (`workers.Workers`,
shared with the other tables), each task with its own connections. The sides are read
with separate statements, not one snapshot: rows that change during the run may show up
as differences (check again, or use `--fix`, which compares and sets).

    >>> found = ChecksumDiff(spec, source_engine, target_engine, settings).run()  # doctest: +SKIP
    >>> [(d.kind, d.key, d.columns) for d in found.diffs]                          # doctest: +SKIP
    [('mismatch', '[42]', ('amount',)), ('missing', '[77]', ())]
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from cdc_recon.config.reconcile_settings import ReconcileSettings
from cdc_recon.reconcile import segment_sql as sql
from cdc_recon.reconcile.diff import diff_rows
from cdc_recon.reconcile.expressions import KeyValues, SideSql
from cdc_recon.reconcile.fetched import fetched_diffs, merge
from cdc_recon.reconcile.model import EXTRA, MISSING, RowDiff
from cdc_recon.reconcile.segments import (
    FIRST_LEVEL_BUCKETS,
    Segment,
    children,
    first_segments,
    integer_thresholds,
    mismatched,
    stripe_count,
    stripes,
)
from cdc_recon.reconcile.tables import TableSpec
from cdc_recon.reconcile.workers import Task, Workers

Progress = Callable[[int], None]


@dataclass
class DiffStats:
    rows: int = 0
    segments: int = 0
    fetched_segments: int = 0
    fetched_rows: int = 0
    max_depth: int = 0
    diffs: list[RowDiff] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "segments": self.segments,
            "fetched_segments": self.fetched_segments,
            "fetched_rows": self.fetched_rows,
            "depth": self.max_depth,
        }


class ChecksumDiff:
    """The bisection of one table; `run()` returns every differing key."""

    def __init__(
        self,
        spec: TableSpec,
        source: sa.Engine,
        target: sa.Engine,
        settings: ReconcileSettings,
        progress: Progress | None = None,
        workers: Workers | None = None,
    ) -> None:
        self.spec = spec
        self.engines = (source, target)
        self.sides: tuple[SideSql, SideSql] = spec.sides()
        self.settings = settings
        self.progress = progress or (lambda rows: None)
        self.stats = DiffStats()
        self._workers = workers
        self._lock = threading.Lock()

    def run(self) -> DiffStats:
        """Every differing key; the segments are checked on `workers` (or a pool of
        `settings.workers` threads of its own), this thread helping when it is one of
        them (a table job), else only waiting."""
        with self._pool() as workers:
            pending: set[Task[list[Segment]]] = set()

            def submit(segment: Segment, thresholds: list[KeyValues] | None = None) -> None:
                check = functools.partial(self._check, workers, segment, thresholds)
                pending.add(workers.submit(check))

            try:
                for segment, thresholds in self._first_level():
                    submit(segment, thresholds)
                while pending:
                    for task in workers.wait_any(pending):
                        pending.discard(task)
                        for segment in task.outcome():
                            submit(segment)
            finally:  # after an error, the segments nobody started are not started
                for task in pending:
                    task.cancel()
        diffs = self._confirm(sorted(self.stats.diffs, key=lambda d: d.key))
        more, read = fetched_diffs(self.engines, self.sides, self.spec.columns)
        self.stats.fetched_rows += read
        self.stats.diffs = merge(diffs, more, self.spec.columns) if more else diffs
        return self.stats

    @contextlib.contextmanager
    def _pool(self) -> Iterator[Workers]:
        if self._workers is not None:
            yield self._workers
            return
        with Workers(self.settings.workers) as workers:
            yield workers

    def _first_level(self) -> list[tuple[Segment, list[KeyValues] | None]]:
        """The first-level segments (`stripe_count` of them) and, for a key that is not
        an integer, their thresholds: quantiles of the bigger side, read in one pass."""
        source, target = self.sides
        parts = functools.partial(
            stripe_count, segment_rows=self.settings.segment_rows, workers=self.settings.workers
        )
        if self.spec.integer_key:
            with self.engines[0].connect() as s, self.engines[1].connect() as t:
                bounds = [sql.key_bounds(s, source), sql.key_bounds(t, target)]
                lows = [b[0] for b in bounds if b[0] is not None]
                if not lows:
                    return []
                rows = self._estimate(s, t)
            lo, hi = int(min(lows)), int(max(b[1] for b in bounds if b[1] is not None)) + 1
            points = [(p,) for p in integer_thresholds(lo, hi, parts(rows))]
            return [(s, None) for s in first_segments(points, rows, (lo,), (hi,))]
        with self.engines[0].connect() as s, self.engines[1].connect() as t:
            counts = [sql.count_rows(s, source), sql.count_rows(t, target)]
        rows = self.stats.rows = max(counts)
        if rows == 0:
            return []
        bigger, count = counts.index(rows), parts(rows)
        factor = self._factor(Segment(None, None, math.ceil(rows / count)))
        every = max(1, math.ceil(rows / (count * factor)))
        with self.engines[bigger].connect() as conn:
            points = sql.split_points(conn, self.sides[bigger], Segment(None, None, rows), every)
        return [(segment, inner) for segment, inner in stripes(points, count, rows)]

    def _estimate(self, s: sa.Connection, t: sa.Connection) -> int:
        """Rows on the bigger side: the planner's estimate, else a count."""
        shapes = (self.spec.source_shape, self.spec.target_shape)
        rows = max(shape.estimated_rows for shape in shapes)
        if rows == 0:
            rows = max(sql.count_rows(s, self.sides[0]), sql.count_rows(t, self.sides[1]))
        self.stats.rows = rows
        return rows

    def _factor(self, segment: Segment) -> int:
        """Sub-segments per check: enough to reach the threshold in one step, at most
        `bisection_factor` (one query returns them all); a first-level segment of a
        one-column key takes up to `FIRST_LEVEL_BUCKETS`, so that the one scan of a big
        table leaves small mismatching parts (a composite key's bucket is a CASE, whose
        cost grows with the number of buckets)."""
        cap = self.settings.bisection_factor
        if segment.depth == 0 and len(self.spec.key) == 1:
            integer = self.spec.integer_key
            most = [s.dialect.first_level_buckets(integer, FIRST_LEVEL_BUCKETS) for s in self.sides]
            cap = max(cap, min(most))
        wanted = math.ceil(segment.rows / self.settings.bisection_threshold)
        return max(2, min(cap, wanted))

    def _thresholds(self, segment: Segment) -> list[KeyValues]:
        factor = self._factor(segment)
        if self.spec.integer_key and segment.lo is not None and segment.hi is not None:
            return [(p,) for p in integer_thresholds(segment.lo[0], segment.hi[0], factor)]
        every = max(1, math.ceil(segment.rows / factor))
        with self.engines[0].connect() as s, self.engines[1].connect() as t:
            options = [sql.split_points(s, self.sides[0], segment, every)]
            options.append(sql.split_points(t, self.sides[1], segment, every))
        return max(options, key=len)

    def _check(
        self, workers: Workers, segment: Segment, thresholds: list[KeyValues] | None = None
    ) -> list[Segment]:
        """Checks `segment`, both sides at once; diffs its small mismatching parts,
        returns the big ones."""
        if segment.rows <= self.settings.bisection_threshold:
            self._fetch(segment)
            return []
        if thresholds is None:
            thresholds = self._thresholds(segment)
        if not thresholds:
            self._fetch(segment)
            return []
        target = workers.submit(functools.partial(self._buckets, 1, segment, thresholds))
        try:
            left = self._buckets(0, segment, thresholds)
        except BaseException:
            target.cancel()
            raise
        right = workers.gather([target])[0]
        with self._lock:
            self.stats.segments += 1
            self.stats.max_depth = max(self.stats.max_depth, segment.depth)
        bad = children(segment, thresholds, mismatched(left, right))
        if segment.depth == 0:
            self.progress(segment.rows)
        small = [s for s in bad if s.rows <= self.settings.bisection_threshold]
        if small:
            self._fetch(*small)
        return [s for s in bad if s.rows > self.settings.bisection_threshold]

    def _buckets(
        self, side: int, segment: Segment, thresholds: list[KeyValues]
    ) -> dict[int, tuple[int, str]]:
        with self.engines[side].connect() as conn:
            return sql.checksum_buckets(conn, self.sides[side], segment, thresholds)

    def _fetch(self, *segments: Segment) -> None:
        with self.engines[0].connect() as s, self.engines[1].connect() as t:
            left = sql.fetch_segments(s, self.sides[0], segments)
            right = sql.fetch_segments(t, self.sides[1], segments)
        found = diff_rows(left, right, self.spec.columns)
        with self._lock:
            self.stats.fetched_segments += len(segments)
            self.stats.fetched_rows += len(left) + len(right)
            self.stats.diffs.extend(found)

    def _confirm(self, diffs: list[RowDiff]) -> list[RowDiff]:
        """Re-diffs the one-sided keys by key lookup on both sides."""
        lonely = [d.key for d in diffs if d.kind in (MISSING, EXTRA)]
        if not lonely:
            return diffs
        with self.engines[0].connect() as s, self.engines[1].connect() as t:
            left = sql.fetch_keys(s, self.sides[0], lonely)
            right = sql.fetch_keys(t, self.sides[1], lonely)
        again = diff_rows(left, right, self.spec.columns)
        kept = [d for d in diffs if d.kind not in (MISSING, EXTRA)]
        return sorted(kept + again, key=lambda d: d.key)
