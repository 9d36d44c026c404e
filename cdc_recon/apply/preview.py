"""A dry run of the applier: map a batch and say what applying it would do, writing nothing.

It reads the two things the applier decides by: the keys' stored positions (`key_state`)
and which change ids the ledger holds; `tally` then classifies a batch as the applier
would, and remembers what it would have applied for the batches that follow.

    >>> preview = TargetPreview(engine, settings)       # doctest: +SKIP
    >>> result = preview.apply(items)                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from cdc_recon.apply.mapping import MappedChange, TableMapper
from cdc_recon.apply.reflect import reflect_target
from cdc_recon.batch import ApplyResult, Decoded, Failure, FailureReason
from cdc_recon.config import Settings
from cdc_recon.events import Op
from cdc_recon.exceptions import ConfigError, DatabaseUnavailable, MappingError
from cdc_recon.pg.sql import change_id_order, quote_ident


@dataclass
class PreviewState:
    """What a dry run has seen: stored positions, plus what it would have applied."""

    positions: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)  # change ids in the ledger or seen


def tally(changes: Iterable[MappedChange], state: PreviewState) -> ApplyResult:
    """Classify one batch as `Applier.apply` would, without writing; updates `state`.

    Like the applier: a change id seen before (in the ledger, or earlier in the batch) is
    a duplicate; a change is applied when newer than its key's position before the batch
    and than every change of the key that came before it in the batch; else superseded.
    """
    result = ApplyResult()
    before = dict(state.positions)
    in_batch: set[str] = set()
    newest: dict[tuple[str, str], tuple[int, ...]] = {}
    for change in changes:
        if change.change_id in in_batch:
            result.duplicates += 1
            continue
        in_batch.add(change.change_id)
        slot, parts = (change.target, change.key_text), change.position.parts
        earlier = newest.get(slot)
        late = earlier is not None and earlier >= parts
        if earlier is None or parts > earlier:
            newest[slot] = parts
        stored = before.get(slot)
        if change.change_id in state.known:
            result.duplicates += 1
        elif not late and (stored is None or parts > stored):
            result.applied += 1
        else:
            result.superseded += 1
        if parts > state.positions.get(slot, ()):
            state.positions[slot] = parts
    state.known.update(in_batch)
    return result


def stored_positions(schema: str) -> str:
    return (
        f"SELECT ks.target_table, ks.key_text, ks.position FROM {quote_ident(schema)}.key_state ks "
        "JOIN unnest(%(tables)s::text[], %(keys)s::text[]) AS b(t, k) "
        "ON ks.target_table = b.t AND ks.key_text = b.k"
    )


def known_change_ids(schema: str) -> str:
    return (
        f"SELECT change_id FROM {quote_ident(schema)}.ledger "
        f"WHERE ({change_id_order('change_id')}, change_id) IN "
        f"(SELECT {change_id_order('i')}, i FROM unnest(%(ids)s::text[]) AS i)"
    )


class TargetPreview:
    """Answers `apply(items)` like `Applier.apply`, from reads only."""

    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self.engine = engine
        self.schema = settings.control_schema
        self._state = PreviewState()
        self._mappers: dict[str, TableMapper] = {}
        for index, mapping in enumerate(settings.tables):
            shape = reflect_target(engine, mapping, index)
            try:
                family = mapping.source_family(settings.format)
                self._mappers[mapping.source] = TableMapper(mapping, shape, family)
            except ValueError as exc:
                raise ConfigError(f"config: tables.{index}: {exc}", key=f"tables.{index}") from exc

    def apply(self, items: Sequence[Decoded | Failure]) -> ApplyResult:
        result = ApplyResult()
        changes: list[MappedChange] = []
        for item in items:
            if isinstance(item, Failure):
                result.failures.append(item)
            elif item.event is None or item.event.op is Op.TRUNCATE:
                result.skipped += 1
            else:
                mapper = self._mappers.get(item.event.table)
                try:
                    if mapper is None:
                        raise MappingError(f"table {item.event.table!r} is not mapped")
                    changes.append(mapper.change(item))
                except MappingError as exc:
                    failure = Failure(item.message, FailureReason.UNMAPPED, str(exc))
                    result.failures.append(failure)
        self._load(changes)
        counted = tally(changes, self._state)
        result.applied, result.superseded = counted.applied, counted.superseded
        result.duplicates = counted.duplicates
        return result

    def _load(self, changes: Sequence[MappedChange]) -> None:
        """Adds the stored positions and ledger ids of `changes` not yet in the state."""
        state = self._state
        slots = {(c.target, c.key_text) for c in changes} - state.positions.keys()
        ids = sorted({c.change_id for c in changes} - state.known)
        params = {"tables": [t for t, _ in slots], "keys": [k for _, k in slots]}
        try:
            with self.engine.connect() as conn:
                if slots:
                    for table, key, position in conn.exec_driver_sql(
                        stored_positions(self.schema), params
                    ):
                        state.positions[(table, key)] = tuple(position)
                if ids:
                    found = conn.exec_driver_sql(known_change_ids(self.schema), {"ids": ids})
                    state.known.update(row[0] for row in found)
        except sa.exc.OperationalError as exc:
            raise DatabaseUnavailable(
                f"cannot reach the target database: {exc.orig}", service="target"
            ) from exc
