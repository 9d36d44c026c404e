"""The workload generator's pure parts: mix parsing, the seeded plan, values, SQL shapes."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_recon.cli.app import main
from cdc_recon.exceptions import UsageError
from cdc_recon.workload import TABLES, Mix, Planner, StartState, table_mappings, topic_names
from cdc_recon.workload import values as v
from cdc_recon.workload.planner import Statement
from cdc_recon.workload.runner import Summary, WorkloadConfig, statement_sql
from cdc_recon.workload.tables import BY_NAME


def plan(seed: int, transactions: int, mix: Mix | None = None) -> list[list[Statement]]:
    planner = Planner(StartState.empty(), mix or Mix(), seed)
    return [planner.transaction(planner.rng.randint(1, 3)) for _ in range(transactions)]


def test_mix_parses_and_rejects() -> None:
    assert Mix.parse("insert=0.5,update=0.4,delete=0.1") == Mix(0.5, 0.4, 0.1)
    assert Mix.parse("insert=1") == Mix(1.0, 0.0, 0.0)
    for bad in ("insert", "upsert=1", "insert=x", "insert=-1", "insert=0"):
        with pytest.raises(UsageError):
            Mix.parse(bad)


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    assert plan(7, 300) == plan(7, 300)
    assert plan(7, 300) != plan(8, 300)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    mix=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)).filter(lambda m: sum(m) > 0),
)
def test_plan_only_touches_existing_rows_and_each_row_once_per_transaction(
    seed: int, mix: tuple[float, float, float]
) -> None:
    rows: dict[str, set[tuple[object, ...]]] = {table.name: set() for table in TABLES}
    for statements in plan(seed, 200, Mix(*mix)):
        touched = [(s.table, s.key_tuple) for s in statements]
        assert len(touched) == len(set(touched)), "a row twice in one transaction"
        for statement in statements:
            keys = rows[statement.table]
            if statement.kind == "insert":
                assert statement.key_tuple not in keys
                assert set(BY_NAME[statement.table].column_names) == set(statement.values)
                keys.add(statement.key_tuple)
            else:
                assert statement.key_tuple in keys, statement
                if statement.kind == "delete":
                    keys.remove(statement.key_tuple)
                    assert not statement.values


def test_planner_continues_after_the_keys_it_finds() -> None:
    start = StartState({"customers": ((5,), (9,)), "order_items": ((9, 1), (9, 4))})
    planner = Planner(start, Mix(1, 0, 0), seed=1)
    inserted = [s for _ in range(200) for s in planner.transaction(1)]
    customers = [s.key["id"] for s in inserted if s.table == "customers"]
    assert customers and min(customers) == 10
    lines = [
        s.key["line_no"] for s in inserted if s.table == "order_items" and s.key["order_id"] == 9
    ]
    assert all(n >= 5 for n in lines)


def test_mostly_updates_keep_the_toasted_bio_unchanged() -> None:
    updates = [
        s
        for transaction in plan(3, 3000, Mix(0.2, 0.8, 0))
        for s in transaction
        if s.table == "customers" and s.kind == "update"
    ]
    with_bio = sum("bio" in s.values for s in updates)
    assert len(updates) > 100 and 0 < with_bio < len(updates) * 0.15


def test_values_stay_in_their_column_types() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        amount = v.amount(rng)
        assert abs(amount) <= v.MAX_AMOUNT and amount == amount.quantize(Decimal("0.01"))
        moment = v.timestamp(rng)
        assert moment.tzinfo is dt.UTC and 1964 < moment.year < 2036
    bios = [v.bio(rng) for _ in range(20)]
    assert all(v.BIO_MIN <= len(b) <= v.BIO_MAX for b in bios)
    assert "\x00" not in "".join(bios + list(v.WORDS) + list(v.NAMES))


def test_statement_sql_quotes_and_parametrises() -> None:
    insert = statement_sql("my schema", "order_items", "insert", ("order_id", "line_no", "sku"))
    assert insert == (
        'INSERT INTO "my schema"."order_items" ("order_id", "line_no", "sku") '
        "VALUES (%(v_order_id)s, %(v_line_no)s, %(v_sku)s)"
    )
    delete = statement_sql("s", "order_items", "delete", ())
    assert delete.endswith('WHERE "order_id" = %(k_order_id)s AND "line_no" = %(k_line_no)s')
    assert statement_sql("s", "customers", "update", ("name",)) == (
        'UPDATE "s"."customers" SET "name" = %(v_name)s WHERE "id" = %(k_id)s'
    )


def test_ddl_mappings_and_topics() -> None:
    ddl = BY_NAME["order_items"].ddl("shop")
    assert 'PRIMARY KEY ("order_id", "line_no")' in ddl and "numeric(18,2)" in ddl
    mappings = table_mappings("shop", "copy")
    assert mappings[3] == {
        "source": "shop.order_items",
        "target": "copy.order_items",
        "key": ["order_id", "line_no"],
    }
    assert topic_names("demo", "shop")[0] == "demo.shop.customers"


def test_config_needs_an_end_and_summary_counts() -> None:
    with pytest.raises(UsageError):
        WorkloadConfig(duration=None, count=None)
    summary = Summary(transactions=2, seconds=2.0)
    summary.changes.update({("orders", "insert"): 3, ("orders", "delete"): 1})
    assert summary.total == 4 and summary.rate() == 2.0
    assert summary.as_dict()["by_table"] == {"orders": {"delete": 1, "insert": 3}}
    assert summary.by_kind() == {"insert": 3, "update": 0, "delete": 1}


def test_cli_prints_the_mapping_config(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["workload", "mapping", "--schema", "shop", "--target-schema", "copy"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("# table.include.list=shop.customers,shop.accounts,")
    config = yaml.safe_load(out)
    assert config["topics"][0] == "demo.shop.customers"
    assert len(config["tables"]) == 5
    assert main(["workload", "mapping", "--schema", "s", "--include-list"]) == 0
    assert capsys.readouterr().out.strip() == ",".join(f"s.{t.name}" for t in TABLES)


def test_cli_run_rejects_a_bad_mix_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["workload", "run", "--source-url", "postgresql://x@127.0.0.1:1/db", "--mix", "x=1"]
    )
    assert code == 2
    assert "bad mix item" in capsys.readouterr().err
