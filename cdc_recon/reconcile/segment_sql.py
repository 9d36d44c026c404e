"""Count-and-checksum of key ranges, split points and row fetches, inside one database.

Each function runs one statement on `conn` and returns plain values; nothing but the
rows of small, already bisected segments (or of sampled keys) ever leaves the database.

    >>> side = SideSql.build("public.t", [("id", "bigint", "int8")], [("name", "text")])
    >>> checksum_buckets(conn, side, Segment((1,), (1001,), 1000), [(501,)])  # doctest: +SKIP
    {0: (500, '-8861...'), 1: (500, '2710...')}
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from cdc_recon.reconcile.dialects import for_url
from cdc_recon.reconcile.dialects.canonical import normalise_fetched
from cdc_recon.reconcile.dialects.postgresql import SESSION_OPTIONS
from cdc_recon.reconcile.expressions import KeyValues, Params, SideSql, bucket, key_in, key_range
from cdc_recon.reconcile.model import RowImage
from cdc_recon.reconcile.segments import Segment

__all__ = ["SESSION_OPTIONS", "reconcile_engine"]
KEYS_PER_STATEMENT = 1000
RANGES_PER_STATEMENT = 64


def reconcile_engine(url: Any, *, name: str, workers: int) -> sa.Engine:
    """An engine of the URL's dialect whose sessions use UTC (and, on PostgreSQL, ISO
    output), pooled for `workers` threads."""
    return for_url(url).engine(url, name=name, workers=workers)


def key_bounds(conn: sa.Connection, side: SideSql) -> tuple[Any, Any]:
    """(min, max) of a one-column key (two index probes)."""
    sql = f"SELECT min({side.keys[0]}), max({side.keys[0]}) FROM {side.table}"
    row = conn.exec_driver_sql(sql).one()
    return row[0], row[1]


def split_points(
    conn: sa.Connection, side: SideSql, segment: Segment, every: int
) -> list[KeyValues]:
    """Every `every`-th key of the segment in key order: quantiles for any key type."""
    params = Params()
    where = key_range(side, segment.lo, segment.hi, params)
    keys = ", ".join(side.keys)
    every_param = params.add(max(every, 1))
    shown = ", ".join(side.key_norm) if side.canonical_hash is not None else keys
    sql = (
        f"SELECT {shown} FROM (SELECT {keys}, row_number() OVER (ORDER BY {keys}) AS rn "
        f"FROM {side.table} WHERE {where}) s WHERE mod(rn, {every_param}) = 0 ORDER BY rn"
    )
    return [side.bound(row) for row in conn.exec_driver_sql(sql, params).all()]


def checksum_buckets(
    conn: sa.Connection,
    side: SideSql,
    segment: Segment,
    thresholds: Sequence[KeyValues],
) -> dict[int, tuple[int, str]]:
    """Per sub-segment of `segment` split at `thresholds`: (rows, sum of row hashes).

    The planner cannot know that the bucket takes at most `len(thresholds) + 1` values
    and expects a group per row: it would sort the whole range (on disk, for a big one)
    where a small hash table does. Sorting is off for this statement's transaction.
    """
    side.dialect.prepare_checksum(conn)
    params = Params()
    which = bucket(side, thresholds, params)
    where = key_range(side, segment.lo, segment.hi, params)
    sql = (
        f"SELECT {which} AS b, count(*), {side.dialect.sum_text(side.row_hash())} "
        f"FROM {side.table} WHERE {where} GROUP BY 1"
    )
    rows = conn.exec_driver_sql(sql, params).all()
    return {int(b): (int(count), str(total)) for b, count, total in rows}


def _image_columns(side: SideSql) -> str:
    return ", ".join([side.key_json(), *side.value_texts(), side.hash_text()])


def _images(side: SideSql, rows: Sequence[Sequence[Any]]) -> list[RowImage]:
    if side.canonical_hash is None:
        return [RowImage(row[0], tuple(row[1:-1]), row[-1]) for row in rows]
    return [canonical_image(side, row) for row in rows]


def canonical_image(side: SideSql, row: Sequence[Any]) -> RowImage:
    """A row read across engines: its key JSON printed by Python (each engine escapes
    in its own way), fetched json and float values normalised (`normalise_fetched`)."""
    values = tuple(
        normalise_fetched(family, value) if family else value
        for family, value in zip(side.fetched, row[1:-1], strict=True)
    )
    return RowImage(json.dumps(json.loads(row[0]), ensure_ascii=False), values, str(row[-1]))


def fetch_segments(
    conn: sa.Connection, side: SideSql, segments: Sequence[Segment]
) -> list[RowImage]:
    """The normalised rows of (small) segments, up to `RANGES_PER_STATEMENT` per query."""
    found: list[RowImage] = []
    for start in range(0, len(segments), RANGES_PER_STATEMENT):
        params = Params()
        ranges = [
            f"({key_range(side, s.lo, s.hi, params)})"
            for s in segments[start : start + RANGES_PER_STATEMENT]
        ]
        sql = f"SELECT {_image_columns(side)} FROM {side.table} WHERE {' OR '.join(ranges)}"
        found.extend(_images(side, conn.exec_driver_sql(sql, params).all()))
    return found


def fetch_keys(conn: sa.Connection, side: SideSql, keys: Sequence[str]) -> list[RowImage]:
    """The normalised rows of the given keys (key JSON texts), in batches."""
    found: list[RowImage] = []
    values = [side.bound(json.loads(key)) for key in keys]
    for start in range(0, len(values), KEYS_PER_STATEMENT):
        params = Params()
        where = key_in(side, values[start : start + KEYS_PER_STATEMENT], params)
        sql = f"SELECT {_image_columns(side)} FROM {side.table} WHERE {where}"
        found.extend(_images(side, conn.exec_driver_sql(sql, params).all()))
    return found


def sample_keys(conn: sa.Connection, side: SideSql, rows: int, estimate: int) -> list[str]:
    """About `rows` keys drawn uniformly at random (Bernoulli sampling on big tables)."""
    params = Params()
    limit = params.add(rows)
    percent = None
    if estimate > 10 * rows:
        percent = params.add(min(100.0, 100.0 * 2 * rows / estimate))
    sql = side.dialect.sample(side.table, side.key_json(), limit, percent)
    return [_key(side, row[0]) for row in conn.exec_driver_sql(sql, params).all()]


def _key(side: SideSql, text: str) -> str:
    if side.canonical_hash is None:
        return text
    return json.dumps(json.loads(text), ensure_ascii=False)


def changed_keys(conn: sa.Connection, side: SideSql, column: str, since: dt.datetime) -> list[str]:
    """Keys whose `column` (a quoted change-time column) is at or after `since`."""
    params = Params()
    sql = f"SELECT {side.key_json()} FROM {side.table} WHERE {column} >= {params.add(since)}"
    return [_key(side, row[0]) for row in conn.exec_driver_sql(sql, params).all()]


def count_rows(conn: sa.Connection, side: SideSql) -> int:
    return int(conn.exec_driver_sql(f"SELECT count(*) FROM {side.table}").scalar_one())
