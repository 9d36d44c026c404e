"""The sweeper's pure parts: windows, counts, adapters' parsing, SQL building, settings."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdc_recon.batch import Message
from cdc_recon.cli.app import main
from cdc_recon.config import load_settings
from cdc_recon.events import ChangeEvent, Op, SourcePosition, key_text
from cdc_recon.exceptions import ConfigError, DecodeError
from cdc_recon.source_db import changelog
from cdc_recon.sweep import queries as sweep_sql
from cdc_recon.sweep.adapters.base import Classified, Window
from cdc_recon.sweep.adapters.debezium_tx import parse_end_event
from cdc_recon.sweep.adapters.kafka_topic import event_key_values, stage_line
from cdc_recon.sweep.sweeper import SweeperThread, SweepRun

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# -- windows and counts --------------------------------------------------------------------


def test_window_steps_cover_the_window_without_overlap() -> None:
    steps = Window(at(0), at(700)).steps(300)
    assert [(s.start, s.end) for s in steps] == [
        (at(0), at(300)),
        (at(300), at(600)),
        (at(600), at(700)),
    ]
    assert Window(at(0), at(600)).steps(300)[-1].end == at(600)
    assert len(Window(at(0), at(600)).steps(300)) == 2
    assert Window(at(0), at(10)).steps(300) == [Window(at(0), at(10))]


@pytest.mark.parametrize(
    ("start", "end"),
    [(at(5), at(5)), (at(6), at(5)), (T0.replace(tzinfo=None), at(5))],
)
def test_a_window_is_aware_and_not_empty(start: dt.datetime, end: dt.datetime) -> None:
    with pytest.raises(ValueError):
        Window(start, end)


def test_counts_add_up_and_keep_the_earliest_in_flight() -> None:
    a = Classified(applied=5, missed=1, earliest_in_flight=at(9), missed_ids=("x",))
    b = Classified(superseded=2, in_flight=3, earliest_in_flight=at(4), missed_ids=("y",))
    total = a + b + Classified()
    assert (total.applied, total.superseded, total.missed, total.in_flight) == (5, 2, 1, 3)
    assert total.earliest_in_flight == at(4) and total.missed_ids == ("x", "y")
    assert total.total == 11


def test_a_sweep_run_reads_as_json_and_one_line() -> None:
    run = SweepRun("ok", "pg_trigger", window_from=at(0), window_to=at(60), missed=2)
    data = json.loads(json.dumps(run.as_dict()))
    assert data["window_from"] == "2024-05-01T12:00:00+00:00" and data["missed"] == 2
    assert "missed 2" in run.summary() and run.total == 2


# -- Debezium transaction metadata ----------------------------------------------------------


def end_event(**extra: Any) -> dict[str, Any]:
    return {
        "status": "END",
        "id": "571:53195832",
        "event_count": 3,
        "data_collections": [
            {"data_collection": "public.customers", "event_count": 2},
            {"data_collection": "public.orders", "event_count": 1},
        ],
        **extra,
    }


def test_end_events_give_the_count_per_table() -> None:
    rows = parse_end_event(orjson.dumps(end_event()), timestamp_ms=1_714_564_800_000)
    assert [(r.tx, r.table, r.event_count, r.lsn) for r in rows] == [
        ("571", "public.customers", 2, 53195832),
        ("571", "public.orders", 1, 53195832),
    ]
    assert rows[0].at == T0 and rows[0].label == "571:53195832"
    assert "\t{53195832}\t" in rows[0].line()


def test_end_events_wrapped_with_a_schema_and_with_a_64_bit_txid() -> None:
    value = {"schema": {"type": "struct"}, "payload": end_event(id=f"{2**32 + 571}:9")}
    rows = parse_end_event(orjson.dumps(value), timestamp_ms=0)
    assert {r.tx for r in rows} == {"571"}, "the 32-bit xid the ledger stores"


@pytest.mark.parametrize(
    "value",
    [
        orjson.dumps({"status": "BEGIN", "id": "571:1"}),
        orjson.dumps(end_event(id="not-a-number")),
        b"{not json",
        b"[]",
        None,
    ],
)
def test_anything_but_an_end_event_counts_nothing(value: bytes | None) -> None:
    assert parse_end_event(value, timestamp_ms=0) == []


# -- Kafka topic stage rows -----------------------------------------------------------------


def event(op: Op = Op.UPDATE, **key: Any) -> ChangeEvent:
    return ChangeEvent(
        table="public.t",
        op=op,
        key=key,
        after={**key, "v": 1} if op.writes_row else None,
        position=SourcePosition((42,)),
        source_ts_ms=7,
        tx="99",
    )


def test_key_values_follow_the_mapping_like_the_applier() -> None:
    change = event(b="x", a=1)
    assert event_key_values(change, ("a", "b")) == (1, "x")
    assert event_key_values(change, None) == ("x", 1), "unmapped: the message key's order"
    assert event_key_values(event(**{"": 5}), ("id",)) == (5,), "a plain-format scalar key"


def test_stage_lines() -> None:
    message = Message("topic", 2, 17, b"k", b"v", timestamp_ms=1_714_564_800_000)
    line = stage_line(message, event(a=1, b="x"), ("a", "b"))
    assert line is not None
    fields = line.split("\t")
    assert fields[:5] == [
        f"public.t:{key_text([1, 'x'])}:99",
        "public.t",
        '["1","x"]',
        "99",
        "{42}",
    ]
    assert fields[6:] == ["topic", "2", "17"]
    broken = stage_line(message, DecodeError("bad"), None)
    assert broken is not None and broken.startswith("kafka:topic:2:17\t\\N")
    assert stage_line(message, None, None) is None, "a tombstone changes no row"
    assert stage_line(message, event(Op.TRUNCATE), None) is None


# -- SQL building --------------------------------------------------------------------------


def test_trigger_sql_quotes_identifiers_and_picks_a_free_dollar_tag() -> None:
    statements = changelog.install_statements("log", 'odd"schema.t', ['k"1', "k$cdcr$2"])
    function = statements[0]
    assert '"odd""schema"."t"' in statements[2]
    assert 'NEW."k""1"::text' in function and 'OLD."k$cdcr$2"::text' in function
    assert function.count("$cdcr1$") == 2, "the body's own $cdcr$ is not the quote"
    assert "array_to_json(ARRAY[" in function and "txid_current()" in function


def test_capture_function_names_stay_short_and_distinct() -> None:
    long_a = changelog.capture_function("log", "public." + "a" * 80)
    long_b = changelog.capture_function("log", "public." + "a" * 79 + "b")
    assert long_a != long_b and all(len(n.split(".")[1]) <= 65 for n in (long_a, long_b))


def test_sweeper_sql_takes_values_as_parameters() -> None:
    assert "%(schema)s" in sweep_sql.try_lock()
    assert {t for t in sweep_sql.SWEEPER_TABLES} == {
        "sweeper_watermark",
        "sweep_runs",
        "missed_changes",
        "sweep_completeness",
    }
    ddl = "\n".join(sweep_sql.sweeper_ddl('we"ird'))
    assert '"we""ird".missed_changes' in ddl
    assert "%(sources)s" in sweep_sql.open_entries("s") and "%(group)s" in sweep_sql.classify("s")


# -- settings and the thread ---------------------------------------------------------------


def test_sweeper_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("sweeper:\n  enabled: true\n  grace: 5\n  adapter: kafka_topic\n")
    sweeper = load_settings(path).sweeper
    assert (sweeper.enabled, sweeper.grace, sweeper.interval, sweeper.window) == (
        True,
        5,
        60,
        300,
    )
    assert (sweeper.retention, sweeper.batch_size) == (7 * 86400, 100_000)
    path.write_text("sweeper:\n  gracee: 5\n")
    with pytest.raises(ConfigError, match="sweeper.gracee: unknown setting"):
        load_settings(path)
    with pytest.raises(ConfigError, match="transaction_topic"):
        load_settings(None, sweeper={"adapter": "debezium_tx"})
    with pytest.raises(ConfigError, match="changelog_schema"):
        load_settings(None, sweeper={"changelog_schema": "a.b"})


def test_the_sweeper_thread_survives_errors_and_stops() -> None:
    settings = load_settings(None, sweeper={"interval": 0.01})
    calls: list[int] = []
    enough = threading.Event()

    def sweep(_settings: Any, *, cancel: Any) -> SweepRun:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        if len(calls) >= 3:
            enough.set()
        return SweepRun("ok", "pg_trigger")

    thread = SweeperThread(settings, sweep=sweep)
    thread.start()
    assert enough.wait(10), "kept sweeping after an error"
    started = time.monotonic()
    thread.stop()
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert thread.errors == 1 and thread.runs >= 2


def test_the_cli_has_the_sweeper_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "sweep" in out and "source" in out
    assert main(["source", "--help"]) == 0
    assert "install" in capsys.readouterr().out
    assert main(["sweep", "--from", "yesterday"]) == 2
    assert "invalid time 'yesterday'" in capsys.readouterr().err
