"""Normalised column expressions, row hashes and key predicates: pure SQL builders.

Both databases compute the same text for equal values, whatever the column's exact type:

    numeric             trim_scale(c): 1.50 and 1.5 are both `1.5` (PostgreSQL ≥ 13)
    integers, floats    as PostgreSQL prints them (floats: shortest exact form)
    timestamptz         c AT TIME ZONE 'UTC': a UTC timestamp, whatever the session zone
    json                c::jsonb: key order and spacing do not matter
    anything else       its text output (sessions use DateStyle ISO and bytea hex)

A row's hash is 64 bits, summed per segment as numeric (order-independent, and unlike
xor a duplicated row does not cancel out):

    fast64   the xor of one seeded 64-bit hash per column, by type, with no text output:
             hashint8extended (integers), hash_numeric_extended (equal numerics hash
             equal whatever their scale), timestamp_hash_extended (timestamptz at UTC),
             hashtextextended (text), jsonb_hash_extended, uuid_hash_extended, a constant
             per boolean value; each column has its own seed (position matters) and NULL
             its own constant. A column whose types differ in kind between the sides
             (int here, numeric there) hashes its normalised text on both.
             ~0.5 µs per row of five columns on PostgreSQL 15.
    md5      ('x' || substr(md5(ROW(...)::text), 1, 16))::bit(64)::bigint, ~1.3 µs per
             row; its input is PostgreSQL's record output, which quotes and escapes each
             field and writes NULL as nothing and '' as `""`, so no separator inside a
             value and no NULL can collide.

fast64 uses PostgreSQL's internal hash functions: use md5 when the two servers differ in
major version or byte order. Both databases must compute a row's hash the same way;
the diff of small segments compares the normalised texts themselves.

Across engines (a MariaDB source), `SideSql.canonical` builds each side from its
dialect instead: canonical texts per value family and their md5 row hash
(`dialects/canonical.py`), json and float columns fetched rather than hashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cdc_recon.pg.sql import quote_ident, quote_table
from cdc_recon.reconcile.dialects.base import Column, Dialect, KeyValues, Params
from cdc_recon.reconcile.dialects.canonical import FETCHED, prefixed
from cdc_recon.reconcile.dialects.postgresql import POSTGRESQL

INTEGER_TYPES = frozenset({"int2", "int4", "int8"})
__all__ = ["INTEGER_TYPES", "KeyValues", "Params", "SideSql", "bucket", "key_in", "key_range"]


def normalised(column_sql: str, base_type: str) -> str:
    """The canonical expression of a column of PostgreSQL type `base_type` (typname)."""
    if base_type == "numeric":
        return f"trim_scale({column_sql})"
    if base_type == "timestamptz":
        return f"({column_sql} AT TIME ZONE 'UTC')"
    if base_type == "timetz":
        return f"({column_sql} AT TIME ZONE 'UTC')"
    if base_type == "json":
        return f"{column_sql}::jsonb"
    return column_sql


_FAMILY = {
    "int2": "int", "int4": "int", "int8": "int", "numeric": "numeric",
    "text": "text", "varchar": "text", "bpchar": "text", "name": "text",
    "timestamptz": "timestamp", "timestamp": "timestamp", "bool": "bool",
    "uuid": "uuid", "jsonb": "json", "json": "json", "float4": "float", "float8": "float",
}  # fmt: skip
_GOLDEN = 0x9E3779B97F4A7C15


def family(base_type: str) -> str | None:
    """The kind of a type for fast64: columns of one kind hash alike on both sides."""
    return _FAMILY.get(base_type)


def _constant(seed: int) -> int:
    value = (seed * _GOLDEN) & 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def column_hash(column_sql: str, base_type: str, seed: int, typed: bool) -> str:
    """A seeded 64-bit hash of one column (see the module docstring); never NULL."""
    kind = family(base_type) if typed else None
    if kind == "int":
        h = f"hashint8extended({column_sql}::int8, {seed})"
    elif kind == "numeric":
        h = f"hash_numeric_extended({column_sql}, {seed})"
    elif kind == "timestamp":
        h = f"timestamp_hash_extended({normalised(column_sql, base_type)}, {seed})"
    elif kind == "text":
        h = f"hashtextextended({column_sql}::text, {seed})"
    elif kind == "json":
        h = f"jsonb_hash_extended({column_sql}::jsonb, {seed})"
    elif kind == "uuid":
        h = f"uuid_hash_extended({column_sql}, {seed})"
    elif kind == "float":
        h = f"hashfloat8extended({column_sql}::float8, {seed})"
    elif kind == "bool":
        h = f"CASE WHEN {column_sql} THEN {_constant(-seed)} WHEN NOT {column_sql} THEN {seed} END"
    else:
        h = f"hashtextextended(({normalised(column_sql, base_type)})::text, {seed})"
    return f"coalesce({h}, {_constant(seed)})"


def row_hash(text_sql: str, algorithm: Literal["fast64", "md5"]) -> str:
    """The md5 row hash of a row text (fast64 rows use `SideSql.row_hash`)."""
    if algorithm == "md5":
        return f"('x' || substr(md5({text_sql}), 1, 16))::bit(64)::bigint"
    return f"hashtextextended({text_sql}, 0)"


@dataclass(frozen=True)
class SideSql:
    """One side's table seen through the comparison: quoted names, normalised values.

    `values` are in the comparison's column order, identical on both sides, so that
    equal rows have equal texts even when a column is renamed or its type differs.
    """

    table: str
    keys: tuple[str, ...]
    key_types: tuple[str, ...]
    key_norm: tuple[str, ...]
    values: tuple[str, ...]
    algorithm: Literal["fast64", "md5"] = "fast64"
    hashes: tuple[str, ...] = ()
    dialect: Dialect = POSTGRESQL
    canonical_hash: str | None = None  # across engines: the canonical row hash
    fetched: tuple[str | None, ...] = ()  # per value: its family when fetched, not hashed
    integer: bool = False  # a one-column integer key (buckets by binary search)
    key_families: tuple[str, ...] = ()  # across engines: each key column's family

    @classmethod
    def canonical(
        cls,
        dialect: Dialect,
        table: str,
        keys: Sequence[tuple[Column, str]],
        values: Sequence[tuple[Column, str]],
    ) -> SideSql:
        """A side compared across engines: (column, family) per key and value column,
        each as its dialect's canonical text; fetched families leave the row hash."""
        key_texts = [dialect.canonical(dialect.quote_ident(c.name), c, f) for c, f in keys]
        texts = [dialect.canonical(dialect.quote_ident(c.name), c, f) for c, f in values]
        hashed = [
            (t, prefixed(f))
            for t, (_, f) in zip(key_texts + texts, [*keys, *values], strict=True)
            if f not in FETCHED
        ]
        return cls(
            table=dialect.quote_table(table),
            keys=tuple(dialect.quote_ident(c.name) for c, _ in keys),
            key_types=tuple(c.type for c, _ in keys),
            key_norm=tuple(key_texts),
            values=tuple(texts),
            dialect=dialect,
            canonical_hash=dialect.row_hash(hashed),
            fetched=tuple(f if f in FETCHED else None for _, f in values),
            integer=len(keys) == 1 and keys[0][1] == "int",
            key_families=tuple(f for _, f in keys),
        )

    @classmethod
    def build(
        cls,
        table: str,
        keys: Sequence[tuple[str, str, str]],
        values: Sequence[tuple[str, str]],
        algorithm: Literal["fast64", "md5"] = "fast64",
        typed: Sequence[bool] | None = None,
    ) -> SideSql:
        """`keys` as (name, format_type, typname), `values` as (name, typname); `typed`
        per key and value column: may fast64 hash it by type (same kind on both sides)."""
        columns = [(name, base) for name, _, base in keys] + list(values)
        typed = list(typed) if typed is not None else [True] * len(columns)
        return cls(
            table=quote_table(table),
            keys=tuple(quote_ident(name) for name, _, _ in keys),
            key_types=tuple(kind for _, kind, _ in keys),
            key_norm=tuple(normalised(quote_ident(name), base) for name, _, base in keys),
            values=tuple(normalised(quote_ident(name), base) for name, base in values),
            algorithm=algorithm,
            hashes=tuple(
                column_hash(quote_ident(name), base, i + 1, flag)
                for i, ((name, base), flag) in enumerate(zip(columns, typed, strict=True))
            ),
        )

    def row_text(self) -> str:
        return f"ROW({', '.join(self.key_norm + self.values)})::text"

    def row_hash(self) -> str:
        if self.canonical_hash is not None:
            return self.canonical_hash
        if self.algorithm == "fast64" and self.hashes:
            return "(" + " # ".join(self.hashes) + ")"
        return row_hash(self.row_text(), self.algorithm)

    def key_json(self) -> str:
        """The key as JSON text: equal on both sides for equal keys (matching, reports);
        across engines a JSON array of canonical texts (`segment_sql` re-prints it)."""
        if self.canonical_hash is not None:
            return self.dialect.key_text(self.key_norm)
        return f"json_build_array({', '.join(self.key_norm)})::text"

    def key_tuple(self) -> str:
        return _tuple(self.keys)

    def bound(self, key: Sequence[Any]) -> KeyValues:
        """A key read as canonical texts, as parameters: integer parts as integers, so
        that MariaDB compares them as integers, not as doubles (exact past 2^53)."""
        if not self.key_families:
            return tuple(key)
        return tuple(
            int(v) if f == "int" and isinstance(v, str) else v
            for v, f in zip(key, self.key_families, strict=True)
        )

    def value_texts(self) -> list[str]:
        """The compared values as text (canonical ones already are)."""
        if self.canonical_hash is not None:
            return list(self.values)
        return [f"({value})::text" for value in self.values]

    def hash_text(self) -> str:
        return self.dialect.as_text(self.row_hash())


def _tuple(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"({', '.join(items)})"


def key_range(side: SideSql, lo: KeyValues | None, hi: KeyValues | None, params: Params) -> str:
    """`lo <= key < hi` (either end open when None), as a row comparison on the key."""
    parts = []
    if lo is not None:
        parts.append(f"{side.key_tuple()} >= {_tuple([params.add(v) for v in lo])}")
    if hi is not None:
        parts.append(f"{side.key_tuple()} < {_tuple([params.add(v) for v in hi])}")
    return " AND ".join(parts) or "true"


def bucket(side: SideSql, thresholds: Sequence[KeyValues], params: Params) -> str:
    """The 0-based sub-segment of the key: i when thresholds[i-1] <= key < thresholds[i].

    One key column: `width_bucket` over a typed array (a binary search per row); a
    composite key: a CASE over row comparisons.
    """
    if not thresholds:
        return "0"
    if len(side.keys) == 1:
        key, kind = side.keys[0], side.key_types[0]
        found = side.dialect.bucket(key, kind, side.integer, [t[0] for t in thresholds], params)
        if found is not None:
            return found
    branches = [
        f"WHEN {side.key_tuple()} < {_tuple([params.add(v) for v in t])} THEN {i}"
        for i, t in enumerate(thresholds)
    ]
    return f"CASE {' '.join(branches)} ELSE {len(thresholds)} END"


def key_in(side: SideSql, keys: Sequence[KeyValues], params: Params) -> str:
    """`key IN (...)` for explicit key values (bound; the key column's index applies).

    Values come from `key_json`, so timestamps are UTC texts: sessions run in UTC.
    """
    if not keys:
        return "false"
    rows = [_tuple([params.add(v) for v in key]) for key in keys]
    return f"{side.key_tuple()} IN ({', '.join(rows)})"
