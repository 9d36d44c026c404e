"""From a change event to a target row, through the configured table mapping (promise P7).

Pure logic: the target table's shape (its columns, their types and its key) is reflected
by `db/` and handed in as a `TargetShape`; nothing here talks to a database. An event
raises `MappingError`, and is quarantined by the applier, when:

- its table is not mapped, or it carries a column the target does not have;
- it comes from another connector family than the table is mapped for;
- a value does not fit its column exactly (`cdc_recon.fit`): nothing is coerced;
- its key is not one and the same everywhere: the key that guards the row (`key_state`),
  names the change (the ledger) and is written (the row) is the after image's key
  columns, and the message key must hold each of them with the same value and type;
  a delete, which has no after image, takes the message key's values, checked like
  the row's;
- its change id is too long for the ledger's btree index (`MAX_CHANGE_ID_BYTES`).

    >>> mapper = TableMapper(mapping, shape)          # doctest: +SKIP
    >>> change = mapper.change(event)                 # doctest: +SKIP
    >>> change.key_text, change.row                   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from cdc_recon.apply import native
from cdc_recon.batch import Decoded
from cdc_recon.config import TableMapping
from cdc_recon.events import MISSING, ChangeEvent, Op, SourcePosition, change_id, key_text
from cdc_recon.exceptions import InvalidChange, MappingError, NewColumns
from cdc_recon.fit import Check, column_check, native_kind, preview

# Target index per image column (None: the image is the target row), the columns left
# MISSING, and the image's columns left out by `on_new_column: ignore`.
Plan = tuple[tuple[int, ...] | None, frozenset[int], tuple[str, ...]]
# PostgreSQL's btree holds index rows of at most 2704 bytes; the ledger's change-id index
# and key_state's primary key are btrees. A longer key would fail the batch's statement
# on every redelivery, so it is refused before it reaches the database.
MAX_CHANGE_ID_BYTES = 2600


@dataclass(frozen=True)
class TargetShape:
    """The target table as reflected: its writable columns (in COPY order) and its key."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    json_columns: frozenset[str] = frozenset()
    array_columns: frozenset[str] = frozenset()
    types: tuple[str, ...] = ()  # PostgreSQL's format_type() per column; () checks none

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

    def __init__(
        self, mapping: TableMapping, shape: TargetShape, connector: str = "postgresql"
    ) -> None:
        self.mapping = mapping
        self.shape = shape
        self.connector = connector
        self._index = {column: i for i, column in enumerate(shape.columns)}
        self._checks: tuple[Check | None, ...] = tuple(
            column_check(type_name) for type_name in shape.types
        ) or (None,) * len(shape.columns)  # a shape without types (unit tests) checks none
        self._key_indexes = tuple(self._index[column] for column in shape.key)
        # (column index, check) of the columns checked: the loop every row goes through
        self._active = tuple((i, c) for i, c in enumerate(self._checks) if c is not None)
        # The Rust row checker takes the common kinds of column in one call per row;
        # `_rest` are the checks it leaves to Python when it says the row fits.
        kinds = [native_kind(t) for t in shape.types] if shape.types else []
        self._fast = native.row_checker(kinds) if any(kinds) else None
        self._rest = tuple((i, c) for i, c in self._active if self._fast is None or not kinds[i])
        self._source_to_target = self._column_map(mapping, shape)
        self._key_len = len(mapping.key)
        self._plans: dict[tuple[str, ...], Plan] = {}
        # Changes per image column left out by `on_new_column: ignore`, since the
        # applier last took them (it counts and logs them).
        self.ignored: dict[str, int] = {}
        self._soft_flag = (
            self._index.get(mapping.soft_delete_column) if mapping.delete_mode == "soft" else None
        )
        # timestamptz columns whose zone-less source times are read in datetime_zone
        self._zone = None if mapping.datetime_zone == "UTC" else ZoneInfo(mapping.datetime_zone)
        self._zoned = tuple(
            i for i, type_name in enumerate(shape.types) if type_name == "timestamp with time zone"
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

    def _plan(
        self, table: str, columns: tuple[str, ...], source_types: Mapping[str, Any] | None = None
    ) -> Plan:
        """Target index per source column (-1: not written), and the columns left MISSING;
        indexes None when the image's columns are the target's, in order.

        Cached by the after image's column names: a table's events repeat the same ones.
        """
        plan = self._plans.get(columns)
        if plan is not None:
            return plan
        indexes: list[int] = []
        new: list[tuple[str, str]] = []  # (source column, target column)
        ignored: list[tuple[str, str]] = []
        for column in columns:
            target = self._target_column(column)
            index = -1 if target is None else self._index.get(target)
            if index is None:
                assert target is not None
                policy = self.mapping.on_new_column
                if policy == "quarantine":
                    raise MappingError(
                        f"column {column!r} of {table} has no column in {self.shape.table}",
                        table=table,
                    )
                (new if policy == "add" else ignored).append((column, target))
                index = -1
            indexes.append(index)
        if new:
            types = source_types or {}
            raise NewColumns(
                f"column(s) {[c for c, _ in new]} of {table} have no column in "
                f"{self.shape.table} yet",
                table=table,
                columns=[(target, _plain(types.get(column))) for column, target in new],
            )
        written = set(indexes)
        if self._soft_flag is not None:
            written.add(self._soft_flag)
        missing = frozenset(range(len(self.shape.columns))) - written
        identity = indexes == list(range(len(self.shape.columns))) and self._soft_flag is None
        # None for an image that already is the target row, column for column
        skipped = tuple(column for column, _ in ignored)
        plan = (None, missing, skipped) if identity else (tuple(indexes), missing, skipped)
        if len(self._plans) < 64:
            self._plans[columns] = plan
        return plan

    def row(self, event: ChangeEvent) -> tuple[tuple[Any, ...], frozenset[int]]:
        """The after image in target column order (absent columns MISSING), and which;
        `MappingError` for a value that does not fit its column."""
        after = event.after
        assert after is not None
        indexes, missing, ignored = self._plan(event.table, tuple(after), event.source_types)
        for column in ignored:
            self.ignored[column] = self.ignored.get(column, 0) + 1
        if indexes is None and self._zone is None:
            values = tuple(after.values())
            self._check(event.table, values)
            return values, missing
        if indexes is None:
            indexes = tuple(range(len(self.shape.columns)))
        row: list[Any] = [MISSING] * len(self.shape.columns)
        for index, value in zip(indexes, after.values(), strict=True):
            if index >= 0:
                row[index] = value
        if self._soft_flag is not None:
            row[self._soft_flag] = False
        if self._zone is not None:
            self._in_zone(row)
        self._check(event.table, row)
        return tuple(row), missing

    def _in_zone(self, row: list[Any]) -> None:
        """Zone-less times of timestamptz columns read in `datetime_zone` (UTC: as they are)."""
        for index in self._zoned:
            value = row[index]
            if type(value) is dt.datetime and value.tzinfo is None:
                row[index] = value.replace(tzinfo=self._zone)

    def _check(self, table: str, row: Sequence[Any]) -> None:
        missing = MISSING
        fast = self._fast
        active = self._rest if fast is not None and fast.fits(row) else self._active
        for index, check in active:
            value = row[index]
            if value is None or value is missing:
                continue
            problem = check(value)
            if problem is not None:
                column = self.shape.columns[index]
                raise InvalidChange(
                    f"column {column!r} of {self.shape.table}: {preview(value)} {problem}",
                    table=table,
                )

    def key_values(self, event: ChangeEvent, row: tuple[Any, ...] | None) -> tuple[Any, ...]:
        """The change's key: from its row (already checked) when it writes one, checked
        against the message key; from the message key, checked by type, for a delete."""
        message_key = self._message_key(event)
        if row is None:
            values = message_key
            self._check(event.table, self._key_row(values))
            return values
        values = tuple(row[index] for index in self._key_indexes)
        for column, ours, theirs in zip(self.mapping.key, values, message_key, strict=True):
            if ours is MISSING:
                raise InvalidChange(
                    f"the after image of {event.table} lacks key column {column!r}",
                    table=event.table,
                )
            if type(ours) is not type(theirs) or ours != theirs:
                raise InvalidChange(
                    f"message key {column}={preview(theirs)} disagrees with the after "
                    f"image's {preview(ours)} for {event.table}",
                    table=event.table,
                )
        return values

    def _message_key(self, event: ChangeEvent) -> tuple[Any, ...]:
        key = event.key
        columns = self.mapping.key
        if len(key) == self._key_len and tuple(key) == columns:  # the usual case
            return tuple(key.values())
        if len(key) == 1 and "" in key and len(columns) == 1:  # a plain-format scalar key
            return (key[""],)
        lacking = [column for column in columns if column not in key]
        extra = [column for column in key if column not in columns]
        if lacking or extra:
            # Another key than the mapped one: the source's key is not the table's here.
            what = f"lacks key column(s) {lacking}" if lacking else f"has column(s) {extra}"
            raise InvalidChange(
                f"message key of {event.table} {what}; the mapped key is {list(columns)} "
                f"(it has {preview(list(key))})",
                table=event.table,
            )
        return tuple(key[column] for column in columns)

    def change(self, decoded: Decoded) -> MappedChange:
        event = decoded.event
        assert event is not None
        if event.connector != self.connector:
            raise InvalidChange(
                f"a {event.connector} change of {event.table}, which is mapped for "
                f"{self.connector} changes (tables[].connector)",
                table=event.table,
            )
        if event.after is not None:
            row, missing = self.row(event)
            values = self.key_values(event, row)
        else:
            values = self.key_values(event, None)
            row, missing = self._key_row(values), frozenset()
        text = key_text(values)
        tx = event.tx if event.tx is not None else str(event.source_ts_ms)
        identity = change_id(event.table, text, tx)
        if len(identity) > MAX_CHANGE_ID_BYTES // 4 and _utf8_size(identity) > MAX_CHANGE_ID_BYTES:
            raise InvalidChange(
                f"the key of this {event.table} change is too long for the ledger: change id "
                f"of {_utf8_size(identity)} bytes, at most {MAX_CHANGE_ID_BYTES}",
                table=event.table,
            )
        return MappedChange(
            decoded, self.shape.table, text, identity, event.position, event.op, row, missing
        )

    def _key_row(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """A delete carries only its key: the row tuple holds the key, MISSING elsewhere."""
        row: list[Any] = [MISSING] * len(self.shape.columns)
        for column, value in zip(self.shape.key, values, strict=True):
            row[self._index[column]] = value
        return tuple(row)


def _plain(field: Any) -> dict[str, object] | None:
    return dict(field) if field else None


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


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
