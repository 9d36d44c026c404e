"""Columns compared by fetching instead of hashing: json and float across engines.

`dialects/canonical.py` says why neither engine can print the other's json or float
text in SQL. Those columns stay out of the row hash, so bisection cannot see their
differences; this pass reads key, row hash and those columns of every row from both
sides (one statement per side), normalises them in Python and reports the keys whose
values differ. Its cost is a full read of those columns: a table without them never
runs it. Missing and extra keys are the bisection's (the key is in the row hash).

    >>> merge([RowDiff("mismatch", '["1"]', ("a",), ("1",), ("2",))],
    ...       [RowDiff("mismatch", '["1"]', ("j",), ("{}",), ("[]",))], ("a", "j"))[0].columns
    ('a', 'j')
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from cdc_recon.reconcile.expressions import SideSql
from cdc_recon.reconcile.model import MISMATCH, RowDiff, RowImage
from cdc_recon.reconcile.segment_sql import canonical_image


def fetched_positions(side: SideSql) -> list[int]:
    return [i for i, family in enumerate(side.fetched) if family]


def read_fetched(conn: sa.Connection, side: SideSql, positions: Sequence[int]) -> list[RowImage]:
    """Key, the fetched columns (normalised) and the row hash of every row."""
    texts = side.value_texts()
    chosen = [texts[i] for i in positions]
    sql = f"SELECT {', '.join([side.key_json(), *chosen, side.hash_text()])} FROM {side.table}"
    narrow = SideSql(
        table=side.table,
        keys=side.keys,
        key_types=side.key_types,
        key_norm=side.key_norm,
        values=tuple(chosen),
        dialect=side.dialect,
        canonical_hash=side.canonical_hash,
        fetched=tuple(side.fetched[i] for i in positions),
    )
    return [canonical_image(narrow, row) for row in conn.exec_driver_sql(sql).all()]


def fetched_diffs(
    engines: tuple[sa.Engine, sa.Engine], sides: tuple[SideSql, SideSql], columns: Sequence[str]
) -> tuple[list[RowDiff], int]:
    """Mismatches in the fetched columns of keys present on both sides; rows read."""
    positions = fetched_positions(sides[0])
    if not positions:
        return [], 0
    names = [columns[i] for i in positions]
    with engines[0].connect() as s, engines[1].connect() as t:
        left = {row.key: row for row in read_fetched(s, sides[0], positions)}
        right = {row.key: row for row in read_fetched(t, sides[1], positions)}
    found = []
    for key in sorted(left.keys() & right.keys()):
        a, b = left[key], right[key]
        index = [i for i, (x, y) in enumerate(zip(a.values, b.values, strict=True)) if x != y]
        if index:
            found.append(
                RowDiff(
                    MISMATCH,
                    key,
                    tuple(names[i] for i in index),
                    tuple(a.values[i] for i in index),
                    tuple(b.values[i] for i in index),
                    target_hash=b.hash,
                )
            )
    return found, len(left) + len(right)


def merge(diffs: list[RowDiff], more: list[RowDiff], columns: Sequence[str]) -> list[RowDiff]:
    """`diffs` with `more`'s mismatches folded in: one finding per key, its columns in
    the comparison's order."""
    by_key = {d.key: d for d in diffs}
    for extra in more:
        seen = by_key.get(extra.key)
        if seen is None:
            by_key[extra.key] = extra
            continue
        if seen.kind != MISMATCH:
            continue
        values = _by_column(seen)
        values.update(_by_column(extra))
        ordered = [c for c in columns if c in values]
        by_key[extra.key] = RowDiff(
            MISMATCH,
            seen.key,
            tuple(ordered),
            tuple(values[c][0] for c in ordered),
            tuple(values[c][1] for c in ordered),
            target_hash=seen.target_hash,
        )
    return sorted(by_key.values(), key=lambda d: d.key)


def _by_column(diff: RowDiff) -> dict[str, tuple[str | None, str | None]]:
    pairs = zip(diff.source_values, diff.target_values, strict=True)
    return dict(zip(diff.columns, pairs, strict=True))
