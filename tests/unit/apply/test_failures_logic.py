"""The quarantine's pure parts: filters into SQL, escapes, retry outcomes, formatting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cdc_recon.apply.failures import (
    FailureFilter,
    FailureRow,
    escaped,
    failure_filter,
    raw_json,
    select_sql,
)
from cdc_recon.apply.retry import RetrySummary, outcomes_of
from cdc_recon.batch import Failure, Message
from cdc_recon.cli.failures import detail_cell, show_lines, status_cell, summary_rows
from cdc_recon.exceptions import UsageError

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def row(failure_id: int, offset: int) -> FailureRow:
    return FailureRow(failure_id, "t", 0, offset, "unmapped", "d", None, "open", NOW)


def test_an_empty_filter_means_open_rows() -> None:
    assert FailureFilter().where() == ("status = ANY(:statuses)", {"statuses": ["open"]})
    assert FailureFilter(statuses=()).where() == ("true", {})


def test_every_filter_becomes_a_bound_parameter() -> None:
    which = failure_filter(
        ids=[3, 4],
        reasons=["unmapped"],
        tables=["public.orders"],
        topics=["cdc.orders"],
        since="-2h",
        until="now",
        statuses=["open", "retried"],
        now=NOW,
    )
    where, params = which.where()
    assert where == (
        "id = ANY(:ids) AND reason = ANY(:reasons) AND source_table = ANY(:tables) "
        "AND topic = ANY(:topics) AND status = ANY(:statuses) "
        "AND created_at >= :since AND created_at < :until"
    )
    assert params == {
        "ids": [3, 4],
        "reasons": ["unmapped"],
        "tables": ["public.orders"],
        "topics": ["cdc.orders"],
        "statuses": ["open", "retried"],
        "since": datetime(2025, 3, 1, 10, 0, tzinfo=UTC),
        "until": NOW,
    }
    assert "public.orders" not in where, "values never become SQL"


def test_status_all_and_bad_values() -> None:
    assert failure_filter(statuses=["all"], now=NOW).statuses == ()
    assert failure_filter(now=NOW, default_statuses=("open", "retried")).statuses == (
        "open",
        "retried",
    )
    with pytest.raises(UsageError, match="unknown failure status 'closed'"):
        failure_filter(statuses=["closed"], now=NOW)
    with pytest.raises(UsageError, match="invalid time 'yesterday'"):
        failure_filter(since="yesterday", now=NOW)
    with pytest.raises(UsageError, match="empty time window"):
        failure_filter(since="now", until="-1h", now=NOW)
    with pytest.raises(UsageError, match="limit"):
        FailureFilter(limit=0)


def test_select_pages_by_id_and_orders() -> None:
    sql = select_sql("cdc", "true", raw=True, after=True, limit=True)
    assert sql.endswith("WHERE (true) AND id > :after ORDER BY id LIMIT :limit")
    assert "raw_key, raw_value" in sql and '"cdc".failures' in sql
    newest = select_sql("cdc", "true", raw=False, after=False, limit=False, newest=True)
    assert newest.endswith("ORDER BY id DESC") and "raw_key" not in newest


def test_raw_bytes_are_escaped_on_one_line() -> None:
    assert escaped(None) is None
    assert escaped(b'{"id":1}') == '{"id":1}'
    assert escaped(b"\xff\xfea\nb") == "\\xff\\xfea\\nb"
    assert escaped("é".encode()) == "é"
    assert raw_json(b"\x00") == {"text": "\\x00", "base64": "AA==", "bytes": 1}


def test_outcomes_of_a_retried_chunk() -> None:
    rows = [row(1, 10), row(2, 11), row(3, 12), row(4, 13), row(5, 14), row(6, 15)]
    changes = {("t", 0, 10): "a", ("t", 0, 11): "b", ("t", 0, 12): "c", ("t", 0, 15): "c"}
    failed = {("t", 0, 14): Failure(Message("t", 0, 14, None, b"x"), "invalid", "no")}
    done, failing = outcomes_of(
        rows, changes, known_before={"a"}, ledger={"b": "applied", "c": "superseded"}, failed=failed
    )
    assert done == {
        1: "duplicate",  # in the ledger before the retry
        2: "applied",
        3: "superseded",
        4: "skipped",  # a tombstone: nothing to apply
        6: "duplicate",  # the same change earlier in the chunk
    }
    assert list(failing) == [5] and failing[5].reason == "invalid"


def test_retry_summary_counts_and_lists_what_still_fails() -> None:
    summary = RetrySummary()
    summary.add({1: "applied", 2: "superseded", 3: "duplicate", 4: "skipped", 5: "applied"})
    summary.add_failing(row(6, 16), Failure(Message("t", 0, 16, None, None), "unmapped", "no"))
    assert summary_rows(summary.as_dict()) == [
        ("read", 0),
        ("applied", 2),
        ("superseded", 1),
        ("duplicates", 1),
        ("skipped", 1),
        ("failed", 1),
    ]
    assert summary.failing == [{"id": 6, "where": "t[0]@16", "reason": "unmapped", "detail": "no"}]


def test_show_lines() -> None:
    document = {
        **row(7, 42).as_dict(),
        "dead_letter": "sent",
        "event": {"table": "public.a", "op": "c", "key": {"id": 1}, "after": {"id": 1}},
        "decode_error": None,
        "raw_key": raw_json(b'{"id":1}'),
        "raw_value": None,
    }
    lines = show_lines(document)
    assert lines[0] == "failure 7 (open)"
    assert "  where               t[0]@42" in lines
    assert "  dead letter         sent" in lines
    assert '    key               {"id": 1}' in lines
    assert '  raw key             {"id":1}  (8 bytes)' in lines
    assert "  raw value           (null)" in lines
    assert not any("note" in line for line in lines), "empty fields are left out"
    undecoded = show_lines({**document, "event": None, "decode_error": "not JSON"})
    assert "  not decoded: not JSON" in undecoded


def test_detail_cell() -> None:
    assert detail_cell("short") == "short"
    assert detail_cell("x" * 200, 10) == "x" * 9 + "…"


def test_status_cell_says_what_the_retry_found() -> None:
    assert status_cell("retried", "superseded") == "retried (superseded)"
    assert status_cell("open", None) == "open"
    assert status_cell("resolved", "applied") == "resolved"
