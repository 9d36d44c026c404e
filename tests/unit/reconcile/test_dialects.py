"""The dialects and canonical forms of reconciliation across engines: pure, no database."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_recon.reconcile.dialects import by_name, for_url
from cdc_recon.reconcile.dialects.base import Column, Params
from cdc_recon.reconcile.dialects.canonical import (
    compatible_families,
    encode,
    normalise_fetched,
    pair_family,
    row_hash_of,
)
from cdc_recon.reconcile.dialects.mariadb import MARIADB
from cdc_recon.reconcile.dialects.postgresql import POSTGRESQL
from cdc_recon.reconcile.expressions import SideSql, bucket
from cdc_recon.reconcile.fetched import merge
from cdc_recon.reconcile.model import RowDiff


def test_the_url_names_the_dialect() -> None:
    assert for_url("mariadb://u@h:3306/db") is MARIADB
    assert for_url("mysql+pymysql://u@h/db") is MARIADB
    assert for_url("postgresql://u@h/db") is POSTGRESQL
    assert by_name("mariadb") is MARIADB


@pytest.mark.parametrize(
    ("column_type", "base", "family"),
    [
        ("bigint(20) unsigned", "bigint", "int"),
        ("tinyint(1)", "tinyint", "bool"),
        ("bit(1)", "bit", "bool"),
        ("tinyint(4)", "tinyint", "int"),
        ("decimal(18,2)", "decimal", "numeric"),
        ("decimal(20,0) unsigned", "decimal", "int"),
        ("datetime(6)", "datetime", "timestamp"),
        ("timestamp(6)", "timestamp", "timestamp"),
        ("enum('a','b')", "enum", "text"),
        ("char(36)", "char", "text"),
        ("longblob", "longblob", "bytes"),
        ("double", "double", "float"),
    ],
)
def test_mariadb_families(column_type: str, base: str, family: str) -> None:
    assert MARIADB.family(Column("c", column_type, base, True)) == family


def test_postgresql_families_count_numeric_of_scale_zero_as_integers() -> None:
    assert POSTGRESQL.family(Column("c", "numeric(20,0)", "numeric", True)) == "int"
    assert POSTGRESQL.family(Column("c", "numeric(12,2)", "numeric", True)) == "numeric"
    assert POSTGRESQL.family(Column("c", "timestamp with time zone", "timestamptz", True)) == (
        "timestamp"
    )
    assert POSTGRESQL.family(Column("c", "jsonb", "jsonb", True)) == "json"


def test_pairs_of_families() -> None:
    assert pair_family("int", "numeric") == "numeric"
    assert pair_family("text", "uuid") == pair_family("uuid", "text") == "uuid"
    assert pair_family("text", "json") == "json" and pair_family("bool", "int") == "bool"
    assert compatible_families("text", "json") and not compatible_families("text", "timestamp")


def test_the_encoding_keeps_null_empty_and_separators_apart() -> None:
    assert encode(["1", None, ""], ["int", "text", "text"]) == "1,~,0:"
    assert encode(["a,b", "c"]) != encode(["a", "b,c"])
    expected = int(hashlib.md5(b"7,3:x,y").hexdigest()[:16], 16)
    assert row_hash_of(["7", "x,y"], ["int", "text"]) == expected - (1 << 64) * (
        expected >= 1 << 63
    )


@given(st.lists(st.none() | st.text(max_size=5), min_size=2, max_size=4), st.data())
def test_one_changed_text_changes_the_encoding(
    texts: list[str | None], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(texts) - 1))
    other = data.draw(st.none() | st.text(max_size=5))
    changed = [*texts[:i], other, *texts[i + 1 :]]
    assert (encode(texts) == encode(changed)) == (texts == changed)


def test_fetched_json_and_floats_compare_by_value() -> None:
    pg = '{"a": [1.50, 2, {"y": true, "z": null}], "c": "x y", "bb": 1}'
    maria = '{"a":[1.5E0,2.0E0,{"y":true,"z":null}],"bb":1.0E0,"c":"x y"}'
    assert normalise_fetched("json", pg) == normalise_fetched("json", maria)
    assert normalise_fetched("json", '{"a": 1}') != normalise_fetched("json", '{"a": "1"}')
    assert normalise_fetched("float", "1e-07") == normalise_fetched("float", "0.0000001")
    assert normalise_fetched("float", "1e+20") == normalise_fetched("float", "1e20")
    assert normalise_fetched("float", "0.1") != normalise_fetched("float", "0.10000000000000002")
    assert normalise_fetched("text", "1.50") == "1.50" and normalise_fetched("json", None) is None


def mariadb_side(key_type: str, base: str, family: str) -> SideSql:
    key = Column("id", key_type, base, False)
    value = Column("a`b", "decimal(12,2)", "decimal", True)
    return SideSql.canonical(MARIADB, "db.t", [(key, family)], [(value, "numeric")])


def test_mariadb_side_quotes_with_backticks_and_buckets_integers_by_interval() -> None:
    side = mariadb_side("bigint(20)", "bigint", "int")
    assert side.table == "`db`.`t`" and side.keys == ("`id`",)
    assert "`a``b`" in side.values[0] and "MD5(CONCAT_WS(',', " in side.row_hash()
    params = Params()
    assert bucket(side, [(10,), (20,)], params) == "INTERVAL(`id`, %(p0)s, %(p1)s)"
    assert params == {"p0": 10, "p1": 20}
    text = mariadb_side("varchar(10)", "varchar", "text")
    assert bucket(text, [("m",)], Params()).startswith("CASE WHEN `id` < %(p0)s THEN 0")
    assert MARIADB.first_level_buckets(False, 16384) == 64
    assert MARIADB.first_level_buckets(True, 16384) == 16384


def test_a_merged_finding_has_the_columns_of_both_passes_in_order() -> None:
    first = [RowDiff("mismatch", '["1"]', ("a",), ("1",), ("2",), "h"), RowDiff("missing", '["2"]')]
    second = [
        RowDiff("mismatch", '["1"]', ("j",), ("{}",), ("[]",), "h"),
        RowDiff("mismatch", '["3"]', ("j",), ("1",), ("2",), "g"),
    ]
    merged = merge(first, second, ("a", "j"))
    assert [(d.kind, d.key, d.columns) for d in merged] == [
        ("mismatch", '["1"]', ("a", "j")),
        ("missing", '["2"]', ()),
        ("mismatch", '["3"]', ("j",)),
    ]
    assert merged[0].source_values == ("1", "{}") and merged[0].target_hash == "h"


def test_integer_key_parts_are_bound_as_integers_across_engines() -> None:
    key = (Column("k", "bigint(20) unsigned", "bigint", False), "int")
    text = (Column("s", "varchar(5)", "varchar", False), "text")
    side = SideSql.canonical(MARIADB, "db.t", [key, text], [])
    assert side.bound(["18446744073709551215", "7"]) == (18446744073709551215, "7")
    assert SideSql.build("s.t", [("id", "bigint", "int8")], []).bound(["7"]) == ("7",)
