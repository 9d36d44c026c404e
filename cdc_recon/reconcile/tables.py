"""Which tables are reconciled, and how their columns and keys pair up across sides.

The tables are `reconcile.tables`, or else every `tables:` mapping. A table's target,
key, renames and exclusions default to its mapping; the key to the source's primary
key. Compared are the source columns that are neither key nor excluded and exist in
the target (under their mapped name); the others are schema drift, reported by the
schema check.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import sqlalchemy as sa

from cdc_recon.config import Settings
from cdc_recon.config.reconcile_settings import ReconcileTable
from cdc_recon.exceptions import ConfigError
from cdc_recon.reconcile.catalog import TableShape, read_shape
from cdc_recon.reconcile.dialects import by_name
from cdc_recon.reconcile.dialects.canonical import pair_family
from cdc_recon.reconcile.expressions import INTEGER_TYPES, SideSql, family


@dataclass(frozen=True)
class TableSpec:
    """One table as the checks see it: both shapes and the column pairing."""

    name: str
    config: ReconcileTable
    source_shape: TableShape
    target_shape: TableShape
    key: tuple[str, ...]
    rename: tuple[tuple[str, str], ...]
    compared: tuple[str, ...]
    algorithm: Literal["fast64", "md5"] = "fast64"

    @property
    def target(self) -> str:
        return self.target_shape.table

    def target_name(self, source_column: str) -> str:
        return dict(self.rename).get(source_column, source_column)

    @property
    def columns(self) -> tuple[str, ...]:
        """The compared columns under their target names (the labels of findings)."""
        return tuple(self.target_name(c) for c in self.compared)

    @property
    def target_key(self) -> tuple[str, ...]:
        return tuple(self.target_name(c) for c in self.key)

    @property
    def across_engines(self) -> bool:
        """The sides are different engines: compared through canonical texts."""
        return self.source_shape.engine != self.target_shape.engine

    def families(self) -> list[str]:
        """The canonical family of each key and compared column (across engines)."""
        return self.pair_families(self.key + self.compared)

    def type_families(self, column: str) -> tuple[str, str]:
        """(source family, target family) of a source column and its target column."""
        left, right = by_name(self.source_shape.engine), by_name(self.target_shape.engine)
        return (
            left.family(self.source_shape.column(column)),
            right.family(self.target_shape.column(self.target_name(column))),
        )

    def pair_families(self, columns: tuple[str, ...]) -> list[str]:
        """The canonical family of each of the source's `columns` and its target column."""
        return [pair_family(*self.type_families(c)) for c in columns]

    @property
    def integer_key(self) -> bool:
        if len(self.key) != 1:
            return False
        if self.across_engines:
            return self.families()[0] == "int"
        source = self.source_shape.column(self.key[0]).base
        target = self.target_shape.column(self.target_key[0]).base
        return source in INTEGER_TYPES and target in INTEGER_TYPES

    def only(self, columns: tuple[str, ...]) -> TableSpec:
        """The same table comparing only `columns` (source names)."""
        return replace(self, compared=columns)

    def sides(self) -> tuple[SideSql, SideSql]:
        """Both sides' SQL; a column is hashed by type only when its kinds agree."""
        if self.across_engines:
            return self._canonical_sides()
        left = self.key + self.compared
        right = self.target_key + self.columns
        typed = [
            family(self.source_shape.column(s).base) == family(self.target_shape.column(t).base)
            for s, t in zip(left, right, strict=True)
        ]
        return (
            _side(self.source_shape, self.key, self.compared, self.algorithm, typed),
            _side(self.target_shape, self.target_key, self.columns, self.algorithm, typed),
        )

    def _canonical_sides(self) -> tuple[SideSql, SideSql]:
        families = self.families()
        found = []
        for shape, names in (
            (self.source_shape, self.key + self.compared),
            (self.target_shape, self.target_key + self.columns),
        ):
            pairs = [(shape.column(n), f) for n, f in zip(names, families, strict=True)]
            count = len(self.key)
            dialect = by_name(shape.engine)
            found.append(SideSql.canonical(dialect, shape.table, pairs[:count], pairs[count:]))
        return found[0], found[1]


def _side(
    shape: TableShape,
    key: tuple[str, ...],
    values: tuple[str, ...],
    algorithm: str,
    typed: list[bool],
) -> SideSql:
    keys = [(c, shape.column(c).type, shape.column(c).base) for c in key]
    pairs = [(c, shape.column(c).base) for c in values]
    algo: Literal["fast64", "md5"] = "md5" if algorithm == "md5" else "fast64"
    return SideSql.build(shape.table, keys, pairs, algo, typed)


def configured_tables(settings: Settings) -> tuple[ReconcileTable, ...]:
    if settings.reconcile.tables:
        return settings.reconcile.tables
    return tuple(ReconcileTable(source=m.source, target=m.target) for m in settings.tables)


def resolve_table(
    settings: Settings, entry: ReconcileTable, source: sa.Engine, target: sa.Engine
) -> TableSpec:
    """`entry` paired with the catalogs of both databases; `ConfigError` when it cannot be."""
    mapping = settings.mapping_for(entry.source)
    target_table = entry.target or (mapping.target if mapping else entry.source)
    source_shape = read_shape(source, entry.source, side="source")
    target_shape = read_shape(target, target_table, side="target")
    key = entry.key or (mapping.key if mapping else source_shape.primary_key)
    if not key:
        raise ConfigError(f"config: reconcile: {entry.source} has no key; set reconcile.tables.key")
    rename = dict(mapping.rename) if mapping else {}
    excluded = set(entry.exclude) | set(mapping.exclude if mapping else ())
    included = set(mapping.include) if mapping and mapping.include else None
    for column in key:
        source_shape.column(column)
        target_shape.column(rename.get(column, column))
    compared = tuple(
        c
        for c in source_shape.names
        if c not in key
        and c not in excluded
        and (included is None or c in included)
        and rename.get(c, c) in target_shape.names
    )
    return TableSpec(
        name=entry.source,
        config=entry,
        source_shape=source_shape,
        target_shape=target_shape,
        key=tuple(key),
        rename=tuple(sorted(rename.items())),
        compared=compared,
        algorithm=settings.reconcile.hash,
    )


def resolve_tables(
    settings: Settings, source: sa.Engine, target: sa.Engine, only: list[str] | None = None
) -> list[TableSpec]:
    entries = configured_tables(settings)
    if only:
        unknown = set(only) - {e.source for e in entries} - {e.target for e in entries}
        if unknown:
            raise ConfigError(f"config: reconcile: no table {sorted(unknown)[0]} is configured")
        entries = tuple(e for e in entries if e.source in only or e.target in only)
    if not entries:
        raise ConfigError("config: reconcile.tables: no tables to reconcile", key="reconcile")
    return [resolve_table(settings, entry, source, target) for entry in entries]
