"""The canonical row hash on the real MariaDB and PostgreSQL: random rows written to
both hash equal, and a change in any one column makes them differ (issue 18)."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc_recon.config import load_settings
from cdc_recon.config.reconcile_settings import ReconcileTable
from cdc_recon.reconcile.dialects.canonical import FETCHED, normalise_fetched, row_hash_of
from cdc_recon.reconcile.expressions import SideSql
from cdc_recon.reconcile.segment_sql import reconcile_engine
from cdc_recon.reconcile.tables import resolve_table
from tests.conftest import Database
from tests.integration.xengine import MariaDb, mariadb_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

COLUMNS = ("u64", "amount", "name", "at", "day", "flag", "uid", "raw", "ratio")
MARIADB_DDL = """CREATE TABLE h (id BIGINT PRIMARY KEY, u64 BIGINT UNSIGNED,
    amount DECIMAL(20,6), name VARCHAR(40), at DATETIME(6), day DATE, flag TINYINT(1),
    uid CHAR(36), raw VARBINARY(40), ratio DOUBLE) COLLATE utf8mb4_general_ci"""
PG_DDL = """CREATE TABLE {t} (id bigint PRIMARY KEY, u64 numeric(20,0), amount numeric,
    name text, at timestamptz, day date, flag boolean, uid uuid, raw bytea, ratio float8)"""
ZONES = [dt.timezone(dt.timedelta(hours=h, minutes=m)) for h, m in ((0, 0), (5, 30), (-8, 0))]

text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
values = st.fixed_dictionaries(
    {
        "u64": st.none() | st.integers(0, 2**64 - 1),
        "amount": st.none()
        | st.decimals(-(10**13), 10**13, places=6, allow_nan=False, allow_infinity=False),
        "name": st.none() | text,
        "at": st.none() | st.datetimes(dt.datetime(1000, 1, 1), dt.datetime(9999, 12, 31)),
        "day": st.none() | st.dates(dt.date(1000, 1, 1)),
        "flag": st.none() | st.booleans(),
        "uid": st.none() | st.uuids(),
        "raw": st.none() | st.binary(max_size=20),
        "ratio": st.none() | st.floats(allow_nan=False, allow_infinity=False),
    }
)


class Pair:
    """The table `h` on both servers, and the SQL of both sides' row hashes."""

    def __init__(self, source: MariaDb, target: Database) -> None:
        source.run(MARIADB_DDL)
        with target.engine.begin() as conn:
            conn.exec_driver_sql(PG_DDL.format(t=target.table("h")))
        self.source, self.target = source, target
        cfg = load_settings(source_url=source.url, target_url=target.url)
        self.engines = (
            reconcile_engine(source.url, name="source", workers=1),
            reconcile_engine(target.url, name="target", workers=1),
        )
        entry = ReconcileTable(source=source.table("h"), target=f"{target.schema}.h")
        spec = resolve_table(cfg, entry, *self.engines)
        self.sides, self.families = spec.sides(), spec.families()

    def write(
        self,
        row: dict[str, Any],
        zone: dt.timezone,
        upper: bool,
        zeros: int,
        target_row: dict[str, Any] | None = None,
    ) -> None:
        """`row` on both sides (the target's `target_row` when given): the uuid in upper
        case on MariaDB when `upper`, the instant in `zone` and the numeric with `zeros`
        more trailing zeros on PostgreSQL."""
        mine = {**row, "uid": _uuid(row["uid"], upper)}
        row = target_row or row
        self.source.run("DELETE FROM h")
        self.source.insert(
            "INSERT INTO h VALUES (1, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [[mine[c] for c in COLUMNS]],
        )
        theirs = dict(row)
        if row["at"] is not None:  # the same instant, written in another zone
            theirs["at"] = row["at"].replace(tzinfo=dt.UTC).astimezone(zone)
        if row["amount"] is not None:  # 1.5 as 1.500: scale is not a difference
            theirs["amount"] = Decimal(
                f"{row['amount']:f}" + ("0" * zeros if "." in f"{row['amount']:f}" else "")
            )
        with self.target.engine.begin() as conn:
            conn.exec_driver_sql(f"DELETE FROM {self.target.table('h')}")
            conn.exec_driver_sql(
                f"INSERT INTO {self.target.table('h')} VALUES (1, "
                + ", ".join(f"%({c})s" for c in COLUMNS)
                + ")",
                {c: (str(v) if isinstance(v, uuid.UUID) else v) for c, v in theirs.items()},
            )

    def hashes(self) -> tuple[int, int]:
        return (self._hash(0), self._hash(1))

    def texts(self, which: int) -> list[str | None]:
        """The canonical texts of the row, a fetched float's as compared (normalised)."""
        side: SideSql = self.sides[which]
        sql = f"SELECT {', '.join([*side.key_norm, *side.values])} FROM {side.table}"
        with self.engines[which].connect() as conn:
            row = list(conn.exec_driver_sql(sql).one())
        kinds = [None] * len(side.key_norm) + list(side.fetched)
        return [normalise_fetched(k, v) if k else v for k, v in zip(kinds, row, strict=True)]

    def hashed(self, texts: list[str | None]) -> int:
        """The Python reference hash of the texts that are hashed (not the fetched)."""
        kept = [(t, f) for t, f in zip(texts, self.families, strict=True) if f not in FETCHED]
        return row_hash_of([t for t, _ in kept], [f for _, f in kept])

    def _hash(self, which: int) -> int:
        side = self.sides[which]
        with self.engines[which].connect() as conn:
            return int(
                conn.exec_driver_sql(f"SELECT {side.row_hash()} FROM {side.table}").scalar_one()
            )

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()


def _uuid(value: uuid.UUID | None, upper: bool) -> str | None:
    if value is None:
        return None
    return str(value).upper() if upper else str(value)


@pytest.fixture
def both(mariadb_db: MariaDb, target_db: Database) -> Iterator[Pair]:  # noqa: F811
    pair = Pair(mariadb_db, target_db)
    yield pair
    pair.close()


def changed(column: str, value: Any) -> Any:
    """A different value of `column` (NULL becomes a value, '' is not NULL)."""
    if column == "name":
        return "" if value is None else None if value == "" else value + " "
    if value is None:
        return {
            "u64": 0,
            "amount": Decimal(0),
            "at": dt.datetime(2000, 1, 1),
            "day": dt.date(2000, 1, 1),
            "flag": False,
            "uid": uuid.UUID(int=0),
            "raw": b"",
            "ratio": 0.0,
        }[column]
    if column == "u64":
        return value + 1 if value < 2**64 - 1 else value - 1
    if column == "amount":
        return value + Decimal("0.000001")
    if column == "at":
        return value + dt.timedelta(microseconds=1 if value.year < 9999 else -1)
    if column == "day":
        return value + dt.timedelta(days=1 if value.year < 9999 else -1)
    if column == "flag":
        return not value
    if column == "ratio":
        return math.nextafter(value, math.inf)  # one unit in the last place
    if column == "uid":
        return uuid.UUID(int=value.int ^ 1)
    return value + b"\x00"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    row=values,
    zone=st.sampled_from(ZONES),
    upper=st.booleans(),
    zeros=st.integers(0, 3),
    column=st.sampled_from(COLUMNS),
)
def test_rows_equal_on_both_servers_hash_equal_and_one_change_differs(
    both: Pair, row: dict[str, Any], zone: dt.timezone, upper: bool, zeros: int, column: str
) -> None:
    both.write(row, zone, upper, zeros)
    source_texts = both.texts(0)
    assert source_texts == both.texts(1)
    source, target = both.hashes()
    assert source == target == both.hashed(source_texts)
    both.write(row, zone, upper, zeros, {**row, column: changed(column, row[column])})
    if column == "ratio":  # fetched, not hashed: the compared values differ instead
        assert both.hashes() == (source, target) and both.texts(1) != source_texts
    else:
        assert both.hashes()[0] == source != both.hashes()[1]


EDGE_DOUBLES = (
    0.0,
    -0.0,
    5e-324,
    2.2250738585072014e-308,
    1e-7,
    0.1 + 0.2,
    1e15,
    1e16,
    1e20,
    1.7976931348623157e308,
    -123456789.125,
    2.0**53 + 2,
)


def test_edge_doubles_compare_equal_across_the_servers(both: Pair) -> None:
    """The doubles whose texts the two servers print differently (exponents, -0,
    subnormals, the largest) are equal once fetched and normalised."""
    empty = dict.fromkeys(COLUMNS)
    for value in EDGE_DOUBLES:
        both.write({**empty, "ratio": value}, dt.UTC, False, 0)
        assert both.texts(0) == both.texts(1), value
