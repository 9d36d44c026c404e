"""Pure parts of the MariaDB sweeper: trigger SQL, value conversion, picking messages."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_recon.events import key_text
from cdc_recon.source_db import mariadb_changelog as sql
from cdc_recon.source_db.mariadb_rows import snapshot_position
from cdc_recon.source_db.mariadb_values import convert_row, converters, key_param
from cdc_recon.sweep.adapters.kafka_lookup import Found, _pick


def test_key_json_is_a_compact_array_of_quoted_texts() -> None:
    assert sql.key_json("NEW", ["a", "b"]) == (
        "CONCAT('[', JSON_QUOTE(CAST(NEW.`a` AS CHAR)), ',', "
        "JSON_QUOTE(CAST(NEW.`b` AS CHAR)), ']')"
    )


def test_update_trigger_logs_key_changes_as_delete_and_insert() -> None:
    statements = sql.install_statements("log", "source.t", ["id"], ["id", "v"])
    update = next(s for s in statements if "AFTER UPDATE" in s)
    assert "BINARY OLD.`v` <=> BINARY NEW.`v`" in update  # a no-op update is not logged
    same_key, _, changed_key = update.partition("ELSE")
    assert "'u'" in same_key and "'d'" not in same_key
    assert "OLD.`id`" in changed_key and "'d'" in changed_key and "'c'" in changed_key
    assert [s.split()[0] for s in statements] == ["DROP", "CREATE"] * 3


def test_trigger_names_fit_mariadb_and_differ_per_table() -> None:
    names = {sql.trigger_name(t, op) for t in ("a.b", "a.c") for op in "cud"}
    assert len(names) == 6 and all(len(n) <= 64 for n in names)


def test_table_names_in_trigger_bodies_are_literals_escaped() -> None:
    body = sql.install_statements("log", "db.it's", ["id"], ["id"])[1]
    assert "VALUES ('db.it''s'" in body


def test_values_take_the_decoded_message_forms() -> None:
    columns = [
        ("id", "bigint", "bigint(20) unsigned"),
        ("flag", "tinyint", "tinyint(1)"),
        ("bit", "bit", "bit(1)"),
        ("at", "timestamp", "timestamp(6)"),
        ("born", "date", "date"),
        ("wall", "datetime", "datetime(6)"),
        ("t", "time", "time"),
        ("n", "int", "int(11)"),
    ]
    row = {
        "id": 2**64 - 1,
        "flag": 1,
        "bit": b"\x00",
        "at": dt.datetime(2024, 1, 1, 12),
        "born": "0000-00-00",
        "wall": "0000-00-00 00:00:00",
        "t": dt.timedelta(hours=23, minutes=59),
        "n": None,
    }
    assert convert_row(row, converters(columns)) == {
        "id": Decimal(2**64 - 1),
        "flag": True,
        "bit": False,
        "at": dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC),
        "born": None,
        "wall": None,
        "t": dt.time(23, 59),
        "n": None,
    }


def test_a_time_beyond_a_day_is_refused() -> None:
    with pytest.raises(ValueError, match="column t"):
        convert_row({"t": dt.timedelta(hours=25)}, converters([("t", "time", "time")]))


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_integer_keys_round_trip_through_key_text(value: int) -> None:
    text = key_text([Decimal(value)])
    assert text == f'["{value}"]' and key_param("bigint", str(value)) == value


def test_snapshot_position_orders_like_the_connector() -> None:
    position, tx = snapshot_position(
        {"Binlog_snapshot_file": "mariadb-bin.000012", "Binlog_snapshot_position": "4711"}
    )
    assert (position, tx) == ((12, 4711, 0), "mariadb-bin.000012:4711")


def found(cid: str, offset: int) -> Found:
    return Found(("t", '["1"]', "u", 5), cid, cid, (1, offset, 0), "topic", 0, offset)


def test_pick_takes_unapplied_messages_up_to_the_shortfall() -> None:
    candidates = {("t", '["1"]', "u", 5): [found("g3", 3), found("g1", 1), found("g2", 2)]}
    free = {"g2", "g3"}
    picked = _pick(candidates, {("t", '["1"]', "u", 5): 1}, lambda ids: free & set(ids))
    assert [f.change_id for f in picked] == ["g2"]
