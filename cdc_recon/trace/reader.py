"""Reading one key's evidence: the target's control tables, the source's change log and
both current rows, in read-only transactions, every query bounded (`trace.queries`).

    >>> found = read_trace(target, source, settings, TraceRequest(...))   # doctest: +SKIP
    >>> found.known, [c.verdict for c in found.changes]                   # doctest: +SKIP
    (True, ['applied', 'superseded'])

`trace_key` opens (and closes) the engines itself: the CLI's way in. The HTTP API passes
its own target engine to `read_trace`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from cdc_recon.apply.failures import FailureRow, decode_rows
from cdc_recon.batch import Failure
from cdc_recon.config import Settings, TableMapping
from cdc_recon.events import event_change_id, key_text, key_values
from cdc_recon.exceptions import ConnectionFailed, UsageError
from cdc_recon.pg.engine import create_engine
from cdc_recon.pg.errors import guard
from cdc_recon.pg.sql import quote_ident
from cdc_recon.source_db.changelog import changes_table
from cdc_recon.source_db.rows import key_objects
from cdc_recon.trace import queries as sql
from cdc_recon.trace.model import Change, Evidence, RowComparison, assemble, compare_rows

DEFAULT_LIMIT = 1000  # rows per record kind
STATEMENT_TIMEOUT_MS = 30_000
Row = dict[str, Any]


@dataclass(frozen=True)
class TraceRequest:
    """Which key, in which source-time range, how many rows of each kind at most."""

    mapping: TableMapping
    key: tuple[str, ...]  # one text per key column, in key order
    start: dt.datetime
    end: dt.datetime
    limit: int = DEFAULT_LIMIT

    @property
    def key_text(self) -> str:
        return key_text(self.key)


@dataclass(frozen=True)
class Trace:
    """Everything known of one key; `known` is False when no record names it."""

    request: TraceRequest
    changes: list[Change]
    key_state: Row | None
    findings: list[Row]
    corrections: list[Row]
    rows: RowComparison
    notes: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)  # record kinds cut at the limit

    @property
    def known(self) -> bool:
        r = self.rows
        return bool(
            self.changes
            or self.key_state
            or self.findings
            or self.corrections
            or r.source is not None
            or r.target is not None
        )

    def as_dict(self) -> dict[str, Any]:
        req = self.request
        return {
            "table": req.mapping.source,
            "target_table": req.mapping.target,
            "key": list(req.key),
            "key_text": req.key_text,
            "from": req.start.isoformat(),
            "to": req.end.isoformat(),
            "known": self.known,
            "changes": [c.as_dict() for c in self.changes],
            "key_state": _plain(self.key_state),
            "findings": [_plain(f) for f in self.findings],
            "corrections": [_plain(c) for c in self.corrections],
            "rows": self.rows.as_dict(),
            "notes": self.notes,
            "truncated": self.truncated,
        }


def unknown_line(data: Row) -> str:
    return (
        f"no trace of {data['table']} key {data['key_text']} from {data['from']} to "
        f"{data['to']}: no ledger entry, change-log entry, quarantined message, missed "
        "change, reconciliation finding, key state, source row or target row names it"
    )


def _plain(row: Row | None) -> Row | None:
    if row is None:
        return None
    parsed: Row = orjson.loads(orjson.dumps(row, default=str))
    return parsed


def find_mapping(settings: Settings, table: str) -> TableMapping:
    """The mapped table named `table` (its source or its target name)."""
    for mapping in settings.tables:
        if table in (mapping.source, mapping.target):
            return mapping
    names = ", ".join(m.source for m in settings.tables) or "none"
    raise UsageError(f"table {table!r} is not mapped (mapped tables: {names})", value=table)


def trace_key(settings: Settings, request: TraceRequest) -> Trace:
    """`read_trace` on engines of its own; `DatabaseUnavailable` when the target is gone."""
    target = create_engine(settings.target_url, name="target")
    source = create_engine(settings.source_url, name="source") if settings.source_url else None
    try:
        return read_trace(target, source, settings, request)
    finally:
        target.dispose()
        if source is not None:
            source.dispose()


def read_trace(
    target: sa.Engine, source: sa.Engine | None, settings: Settings, request: TraceRequest
) -> Trace:
    """The key's trace; the target must answer, the source may not (a note says so)."""
    if len(request.key) != len(request.mapping.key):
        raise UsageError(
            f"{request.mapping.source} has {len(request.mapping.key)} key column(s) "
            f"({', '.join(request.mapping.key)}); got {len(request.key)} value(s)"
        )
    notes: list[str] = []
    found = guard(lambda: _read_target(target, settings, request))
    changelog: list[Row] = []
    source_row: Row | None = None
    if source is None:
        notes.append("no source_url configured: no change log, no current source row")
    else:
        try:
            changelog, source_row = guard(
                lambda: _read_source(source, settings, request, notes), name="source"
            )
        except ConnectionFailed as exc:
            notes.append(f"the source did not answer: {exc}")
    failures = _matching_failures(found.pop("failures"), settings, request, notes)
    evidence = Evidence(found["ledger"], changelog, failures, found["missed"])
    rows = compare_rows(
        source_row,
        found["target_row"],
        _column_pairs(request.mapping, source_row, found["target_row"]),
    )
    truncated = [
        kind
        for kind, items in (
            ("ledger", found["ledger"]),
            ("change log", changelog),
            ("missed", found["missed"]),
        )
        if len(items) >= request.limit
    ]
    return Trace(
        request,
        assemble(evidence),
        found["key_state"],
        found["findings"],
        found["corrections"],
        rows,
        notes,
        truncated,
    )


def _params(request: TraceRequest) -> Row:
    return {
        "table": request.mapping.source,
        "target": request.mapping.target,
        "key": request.key_text,
        "key_typed": typed_key(request.key),
        "from": request.start,
        "to": request.end,
        "limit": request.limit,
    }


def typed_key(values: Sequence[str]) -> str:
    """The key as reconciliation stores it: integers as JSON numbers, the rest as texts."""
    return orjson.dumps([int(v) if _integer(v) else v for v in values]).decode()


def _integer(text: str) -> bool:
    return text.lstrip("-").isdigit() and str(int(text)) == text


def _read_only(conn: sa.Connection) -> None:
    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")


def _all(conn: sa.Connection, statement: str, params: Mapping[str, Any]) -> list[Row]:
    return [dict(r) for r in conn.exec_driver_sql(statement, dict(params)).mappings()]


def _exists(conn: sa.Connection, name: str) -> bool:
    return bool(conn.exec_driver_sql(sql.relation_exists(), {"name": name}).scalar())


def _read_target(target: sa.Engine, settings: Settings, request: TraceRequest) -> dict[str, Any]:
    schema, params = settings.control_schema, _params(request)
    s = quote_ident(schema)

    def optional(table: str, statement: str) -> list[Row]:
        return _all(conn, statement, params) if _exists(conn, f"{s}.{table}") else []

    with target.connect() as conn, conn.begin():
        _read_only(conn)
        ledger = _all(conn, sql.ledger_rows(schema), params)
        states = _all(conn, sql.key_state(schema), params)
        found: dict[str, Any] = {
            "ledger": ledger,
            "key_state": states[0] if states else None,
            "missed": optional("missed_changes", sql.missed_rows(schema)),
            "failures": _all(conn, sql.failure_rows(schema), params),
            "findings": optional("recon_findings", sql.findings(schema)),
            "corrections": optional("recon_corrections", sql.corrections(schema)),
            "target_row": _row(conn, request.mapping.target, _target_key(request.mapping), request),
        }
    return found


def _read_source(
    source: sa.Engine, settings: Settings, request: TraceRequest, notes: list[str]
) -> tuple[list[Row], Row | None]:
    table = changes_table(settings.sweeper.changelog_schema)
    with source.connect() as conn, conn.begin():
        _read_only(conn)
        if _exists(conn, table):
            changelog = _all(conn, sql.changelog_rows(table), _params(request))
        else:
            changelog = []
            notes.append(f"no change log in the source ({table}): changes come from the target")
        row = _row(conn, request.mapping.source, request.mapping.key, request)
    return changelog, row


def _target_key(mapping: TableMapping) -> tuple[str, ...]:
    return tuple(mapping.rename.get(c, c) for c in mapping.key)


def _row(conn: sa.Connection, table: str, key: Sequence[str], request: TraceRequest) -> Row | None:
    if not _exists(conn, table):
        return None
    keys = key_objects([request.key_text], list(key))
    found = conn.exec_driver_sql(sql.row_by_key(table, key), {"keys": keys}).scalar()
    return dict(found) if found is not None else None


def _column_pairs(
    mapping: TableMapping, source_row: Row | None, target_row: Row | None
) -> list[tuple[str, str]]:
    """(source, target) names of the mapped columns of whichever rows exist."""
    rename = mapping.rename
    back = {t: s for s, t in rename.items()}
    names = list(source_row or {}) or [back.get(t, t) for t in target_row or {}]
    if mapping.include:
        names = [n for n in names if n in mapping.include]
    names = [n for n in names if n not in mapping.exclude]
    pairs = [(n, rename.get(n, n)) for n in names]
    if target_row is not None:
        pairs = [(s, t) for s, t in pairs if t in target_row or source_row is None]
    return pairs


def _matching_failures(
    rows: list[Row], settings: Settings, request: TraceRequest, notes: list[str]
) -> list[Row]:
    """The quarantined messages of the key: decoded with the configured codec (as
    `failures show` does), or, when they do not decode, by their raw key's values."""
    if not rows:
        return []
    if len(rows) >= sql.SCAN_FAILURES:
        notes.append(f"only the newest {sql.SCAN_FAILURES} quarantined messages were searched")
    records = [_failure_row(r) for r in rows]
    try:
        decoded: list[Any] = decode_rows(records, settings)
    except ConnectionFailed as exc:
        notes.append(f"quarantined messages matched by raw key only: {exc}")
        decoded = [None] * len(records)
    matched = []
    for row, item in zip(rows, decoded, strict=True):
        found = _decoded_match(item, request)
        if found is None and _raw_key_matches(row.get("raw_key"), request):
            found = {}
        if found is not None:
            matched.append({**_without_bytes(row), **found})
    return matched


def _failure_row(row: Row) -> FailureRow:
    raw_key, raw_value = row.get("raw_key"), row.get("raw_value")
    return FailureRow(
        id=row["id"],
        topic=row["topic"],
        partition=row["kafka_partition"],
        offset=row["kafka_offset"],
        reason=row["reason"],
        detail=row["detail"],
        source_table=row["source_table"],
        status=row["status"],
        created_at=row["created_at"],
        raw_key=None if raw_key is None else bytes(raw_key),
        raw_value=None if raw_value is None else bytes(raw_value),
    )


def _decoded_match(item: Any, request: TraceRequest) -> Row | None:
    """The change's id, time and op when `item` is an event of the key, else None."""
    event = getattr(item, "event", None)
    if item is None or isinstance(item, Failure) or event is None:
        return None
    if event.table != request.mapping.source:
        return None
    try:
        values = key_values(event.key, request.mapping.key, event.after)
    except KeyError:
        return None
    if key_text(values) != request.key_text:
        return None
    return {
        "change_id": event_change_id(event, values),
        "source_ts": dt.datetime.fromtimestamp(event.source_ts_ms / 1000, dt.UTC),
        "tx": event.tx,
        "op": event.op.value,
        "position": list(event.position.parts),
    }


def _raw_key_matches(raw: Any, request: TraceRequest) -> bool:
    """A JSON message key (`{"id": 7}`, or Connect's `{"schema":…, "payload": {…}}`)
    naming the key's values."""
    if raw is None:
        return False
    try:
        parsed = orjson.loads(bytes(raw))
    except orjson.JSONDecodeError:
        return False
    if isinstance(parsed, dict) and isinstance(parsed.get("payload"), dict):
        parsed = parsed["payload"]
    if not isinstance(parsed, dict):
        return False
    try:
        values = key_values(parsed, request.mapping.key)
    except KeyError:
        return False
    return key_text(values) == request.key_text


def _without_bytes(row: Row) -> Row:
    return {k: v for k, v in row.items() if k not in ("raw_key", "raw_value")}
