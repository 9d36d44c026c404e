"""Classify the rows of one key range on both sides: pure, no database.

>>> a = RowImage('[1]', ('x', '1.5'), 'h1')
>>> b = RowImage('[1]', ('x', '2'), 'h2')
>>> diff_rows([a], [b], ('name', 'amount'))[0].columns
('amount',)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cdc_recon.reconcile.model import EXTRA, MISMATCH, MISSING, RowDiff, RowImage


def differing_columns(
    source: RowImage, target: RowImage, columns: Sequence[str]
) -> tuple[str, ...]:
    """The names of the columns whose normalised texts differ (NULL differs from '')."""
    return tuple(
        name
        for name, left, right in zip(columns, source.values, target.values, strict=True)
        if left != right
    )


def diff_rows(
    source: Iterable[RowImage], target: Iterable[RowImage], columns: Sequence[str]
) -> list[RowDiff]:
    """Every key that is missing, extra or mismatched, in key-text order.

    Rows are matched by their canonical key text; a key present twice on one side keeps
    its last row (keys are unique in the checked tables).
    """
    left = {row.key: row for row in source}
    right = {row.key: row for row in target}
    found: list[RowDiff] = []
    for key in sorted(left.keys() | right.keys()):
        s, t = left.get(key), right.get(key)
        if t is None:
            found.append(RowDiff(MISSING, key))
        elif s is None:
            found.append(RowDiff(EXTRA, key, target_hash=t.hash))
        else:
            changed = differing_columns(s, t, columns)
            if changed:
                index = [columns.index(name) for name in changed]
                found.append(
                    RowDiff(
                        MISMATCH,
                        key,
                        changed,
                        tuple(s.values[i] for i in index),
                        tuple(t.values[i] for i in index),
                        target_hash=t.hash,
                    )
                )
    return found
