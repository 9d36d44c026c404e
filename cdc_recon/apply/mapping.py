"""From a change event to a target row, through the configured table mapping (promise P7).

Pure logic: the target table's shape (its columns and key) is reflected by `db/` and
handed in as a `TargetShape`; nothing here talks to a database. An event for a table
that is not mapped, or carrying a column the target does not have, raises
`MappingError` and is quarantined by the applier.

    >>> mapper = TableMapper(mapping, shape)          # doctest: +SKIP
    >>> change = mapper.change(event)                 # doctest: +SKIP
    >>> change.key_text, change.row                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from cdc_recon.batch import Decoded
from cdc_recon.config import TableMapping
from cdc_recon.events import (
    MISSING,
    ChangeEvent,
    Op,
    SourcePosition,
    change_id,
    key_text,
    key_values,
)
from cdc_recon.exceptions import MappingError

Plan = tuple[tuple[int, ...] | None, frozenset[int]]


@dataclass(frozen=True)
class TargetShape:
    """The target table as reflected: its writable columns (in COPY order) and its key."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    json_columns: frozenset[str] = frozenset()
    array_columns: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        missing = [column for column in self.key if column not in self.columns]
        if missing:
            raise ValueError(f"{self.table}: key columns {missing} are not columns of the table")


class MappedChange(msgspec.Struct, frozen=True, gc=False):
    """One event in target terms: which key of which table, and the row it leaves."""

    decoded: Decoded
    target: str
    key_text: str
    change_id: str
    position: SourcePosition
    op: Op
    row: tuple[Any, ...]  # values in TargetShape.columns order; a delete holds its key only
    missing: frozenset[int] = frozenset()  # indexes of the columns `row` holds as MISSING


class TableMapper:
    """Maps the events of one source table onto its target table."""

    def __init__(self, mapping: TableMapping, shape: TargetShape) -> None:
        self.mapping = mapping
        self.shape = shape
        self._index = {column: i for i, column in enumerate(shape.columns)}
        self._source_to_target = self._column_map(mapping, shape)
        self._key_len = len(mapping.key)
        self._plans: dict[tuple[str, ...], Plan] = {}
        self._soft_flag = (
            self._index.get(mapping.soft_delete_column) if mapping.delete_mode == "soft" else None
        )
        if mapping.delete_mode == "soft" and self._soft_flag is None:
            raise ValueError(
                f"{shape.table}: soft delete column {mapping.soft_delete_column!r} is missing"
            )

    @staticmethod
    def _column_map(mapping: TableMapping, shape: TargetShape) -> dict[str, str]:
        renamed = [mapping.rename.get(column, column) for column in mapping.key]
        if tuple(renamed) != shape.key:
            raise ValueError(
                f"{shape.table}: mapped key {renamed} is not the table's key {list(shape.key)}"
            )
        return dict(mapping.rename)

    def _target_column(self, column: str) -> str | None:
        mapping = self.mapping
        if column in mapping.exclude or (mapping.include and column not in mapping.include):
            return None
        return self._source_to_target.get(column, column)

    def _plan(self, table: str, columns: tuple[str, ...]) -> Plan:
        """Target index per source column (-1: not written), and the columns left MISSING;
        indexes None when the image's columns are the target's, in order.

        Cached by the after image's column names: a table's events repeat the same ones.
        """
        plan = self._plans.get(columns)
        if plan is not None:
            return plan
        indexes = []
        for column in columns:
            target = self._target_column(column)
            index = -1 if target is None else self._index.get(target)
            if index is None:
                raise MappingError(
                    f"column {column!r} of {table} has no column in {self.shape.table}",
                    table=table,
                )
            indexes.append(index)
        written = set(indexes)
        if self._soft_flag is not None:
            written.add(self._soft_flag)
        missing = frozenset(range(len(self.shape.columns))) - written
        identity = indexes == list(range(len(self.shape.columns))) and self._soft_flag is None
        # None for an image that already is the target row, column for column
        plan = (None, missing) if identity else (tuple(indexes), missing)
        if len(self._plans) < 64:
            self._plans[columns] = plan
        return plan

    def row(self, event: ChangeEvent) -> tuple[tuple[Any, ...], frozenset[int]]:
        """The after image in target column order (absent columns MISSING), and which."""
        after = event.after
        assert after is not None
        indexes, missing = self._plan(event.table, tuple(after))
        if indexes is None:
            return tuple(after.values()), missing
        values: list[Any] = [MISSING] * len(self.shape.columns)
        for index, value in zip(indexes, after.values(), strict=True):
            if index >= 0:
                values[index] = value
        if self._soft_flag is not None:
            values[self._soft_flag] = False
        return tuple(values), missing

    def key_values(self, event: ChangeEvent) -> tuple[Any, ...]:
        key = event.key
        if len(key) == self._key_len and tuple(key) == self.mapping.key:  # the usual case
            return tuple(key.values())
        after = event.after if event.op.writes_row else None
        try:
            return key_values(key, self.mapping.key, after)
        except KeyError as exc:
            raise MappingError(
                f"event for {event.table} lacks key column {exc.args[0]!r}", table=event.table
            ) from None

    def change(self, decoded: Decoded) -> MappedChange:
        event = decoded.event
        assert event is not None
        values = self.key_values(event)
        text = key_text(values)
        tx = event.tx if event.tx is not None else str(event.source_ts_ms)
        if event.after is not None:
            row, missing = self.row(event)
        else:
            row, missing = self._key_row(values), frozenset()
        return MappedChange(
            decoded,
            self.shape.table,
            text,
            change_id(event.table, text, tx),
            event.position,
            event.op,
            row,
            missing,
        )

    def _key_row(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """A delete carries only its key: the row tuple holds the key, MISSING elsewhere."""
        row: list[Any] = [MISSING] * len(self.shape.columns)
        for column, value in zip(self.shape.key, values, strict=True):
            row[self._index[column]] = value
        return tuple(row)


_DELETE = Op.DELETE  # a module constant: `Op.DELETE` is an Enum lookup (~80 ns)


class Winner(msgspec.Struct, frozen=True, gc=False):
    """The state a batch leaves for one key: its newest change, TOAST gaps filled in."""

    change: MappedChange
    row: tuple[Any, ...]
    deleted: bool
    missing: frozenset[int]
    # The position of the key's first change in the batch when it had several (the
    # oldest its ledger records as applied, see `encode.ledger_lines`); None for one.
    first: SourcePosition | None = None


def collapse(changes: Iterable[MappedChange]) -> dict[str, Winner]:
    """The final state per key of `changes`.

    Changes are applied in position order; a column MISSING in a later change keeps the
    value an earlier change of the same batch gave it (it stays MISSING otherwise, so the
    stored value survives). A delete clears what came before it.
    """
    by_key: dict[str, list[MappedChange]] = {}
    for change in changes:
        group = by_key.get(change.key_text)
        if group is None:
            by_key[change.key_text] = [change]
        else:
            group.append(change)
    winners: dict[str, Winner] = {}
    for key, group in by_key.items():
        if len(group) == 1:
            only = group[0]
            winners[key] = Winner(only, only.row, only.op is _DELETE, only.missing)
        else:
            winners[key] = _merge(group)
    return winners


def _merge(group: list[MappedChange]) -> Winner:
    first = group[0].position
    group.sort(key=lambda c: c.position)
    state: tuple[Any, ...] | None = None
    missing: frozenset[int] = frozenset()
    for change in group:
        if change.op is _DELETE:
            state = None
        elif state is None or not change.missing:
            state, missing = change.row, change.missing
        else:
            state = tuple(
                old if new is MISSING else new for old, new in zip(state, change.row, strict=True)
            )
            missing = missing & change.missing
    last = group[-1]
    if last.op is _DELETE or state is None:
        return Winner(last, last.row, last.op is _DELETE, last.missing, first)
    return Winner(last, state, False, missing, first)
