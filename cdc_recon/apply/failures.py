"""The quarantine an operator works off: list, show and resolve rows of `failures`.

A failure row is `open` while its message waits for an operator, `retried` once a retry
applied it (or found it superseded, or already applied: `retry_outcome` says which;
`cdc_recon.apply.retry`), or `resolved` when an operator closed it without applying it
(`note` says why). Only open rows count as missed: the status page, `/metrics`,
`cdc-recon status` and the sweeper's `kafka_topic` adapter look at those alone.

The filter's SQL is built here from `FailureFilter` (pure, no I/O; unit-tested); the
reads and the marks run on a SQLAlchemy engine of the target.

    >>> where = FailureFilter(reasons=("unmapped",), since=start)      # doctest: +SKIP
    >>> rows = list_failures(engine, "cdc_recon", where)               # doctest: +SKIP
    >>> resolve_failures(engine, "cdc_recon", [rows[0].id], "dropped") # doctest: +SKIP
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from cdc_recon.batch import Decoded, Failure, Message, printable
from cdc_recon.codecs import AvroDecoder
from cdc_recon.codecs.messages import decode_batch
from cdc_recon.config import Settings
from cdc_recon.events import ChangeEvent
from cdc_recon.exceptions import ConnectionFailed, UsageError
from cdc_recon.kafka.consumer import schema_registry_client
from cdc_recon.pg.errors import guard
from cdc_recon.pg.sql import quote_ident
from cdc_recon.timeparse import parse_time

OPEN, RETRIED, RESOLVED = "open", "retried", "resolved"
STATUSES = (OPEN, RETRIED, RESOLVED)
MAX_NOTE = 1000
LIST_COLUMNS = (
    "id, topic, kafka_partition, kafka_offset, reason, detail, source_table, status, "
    "created_at, resolved_at, retried_at, attempts, retry_outcome, note, dead_letter, "
    "dead_letter_detail"
)


@dataclass(frozen=True)
class FailureFilter:
    """Which failure rows a command means. Empty tuples do not filter; `statuses` empty
    means every status. `since` is inclusive, `until` exclusive (on `created_at`)."""

    ids: tuple[int, ...] = ()
    reasons: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()  # source tables
    topics: tuple[str, ...] = ()
    statuses: tuple[str, ...] = (OPEN,)
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.statuses if s not in STATUSES]
        if unknown:
            raise UsageError(
                f"unknown failure status {unknown[0]!r}; expected one of {', '.join(STATUSES)}",
                value=unknown[0],
            )
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise UsageError(
                f"empty time window: since {self.since.isoformat()} is not before "
                f"until {self.until.isoformat()}"
            )
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"limit must be at least 1, not {self.limit}")

    def where(self) -> tuple[str, dict[str, Any]]:
        """The SQL condition (never empty) and its bind parameters."""
        parts: list[str] = []
        params: dict[str, Any] = {}
        for column, name, values in (
            ("id", "ids", self.ids),
            ("reason", "reasons", self.reasons),
            ("source_table", "tables", self.tables),
            ("topic", "topics", self.topics),
            ("status", "statuses", self.statuses),
        ):
            if values:
                parts.append(f"{column} = ANY(:{name})")
                params[name] = list(values)
        if self.since is not None:
            parts.append("created_at >= :since")
            params["since"] = self.since
        if self.until is not None:
            parts.append("created_at < :until")
            params["until"] = self.until
        return (" AND ".join(parts) or "true"), params


def failure_filter(
    *,
    ids: Sequence[int] | None = None,
    reasons: Sequence[str] | None = None,
    tables: Sequence[str] | None = None,
    topics: Sequence[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    statuses: Sequence[str] | None = None,
    limit: int | None = None,
    default_statuses: tuple[str, ...] = (OPEN,),
    now: datetime | None = None,
) -> FailureFilter:
    """A filter from what an operator typed (the CLI's options, the API's fields): times
    as `replay --from` takes them (`cdc_recon.timeparse`), status `all` for every one."""
    moment = now or datetime.now(UTC)
    chosen = tuple(statuses) if statuses else default_statuses
    return FailureFilter(
        ids=tuple(ids or ()),
        reasons=tuple(reasons or ()),
        tables=tuple(tables or ()),
        topics=tuple(topics or ()),
        statuses=() if "all" in chosen else chosen,
        since=parse_time(since, moment) if since else None,
        until=parse_time(until, moment) if until else None,
        limit=limit,
    )


@dataclass(frozen=True)
class FailureRow:
    """One row of `failures`, raw bytes included only when asked for (`show`, `retry`)."""

    id: int
    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    source_table: str | None
    status: str
    created_at: datetime
    resolved_at: datetime | None = None
    retried_at: datetime | None = None
    attempts: int = 0
    retry_outcome: str | None = None
    note: str | None = None
    dead_letter: str = "pending"
    dead_letter_detail: str | None = None
    raw_key: bytes | None = field(default=None, repr=False)
    raw_value: bytes | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def message(self) -> Message:
        """The quarantined message as the service read it (its Kafka time is not kept)."""
        return Message(self.topic, self.partition, self.offset, self.raw_key, self.raw_value)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, raw bytes left out (`raw_json` gives them)."""
        return {
            "id": self.id,
            "topic": self.topic,
            "kafka_partition": self.partition,
            "kafka_offset": self.offset,
            "reason": self.reason,
            "detail": self.detail,
            "source_table": self.source_table,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "resolved_at": _iso(self.resolved_at),
            "retried_at": _iso(self.retried_at),
            "attempts": self.attempts,
            "retry_outcome": self.retry_outcome,
            "note": self.note,
            "dead_letter": self.dead_letter,
            "dead_letter_detail": self.dead_letter_detail,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def escaped(raw: bytes | None) -> str | None:
    """Raw bytes as one printable line: UTF-8 text as it is (control characters as
    escapes), other bytes as `\\xNN`."""
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("ascii", "backslashreplace")
    return printable(text)


def raw_json(raw: bytes | None) -> dict[str, Any] | None:
    """Raw bytes for a JSON document: escaped text, and base64 to get them back exactly."""
    if raw is None:
        return None
    return {"text": escaped(raw), "base64": base64.b64encode(raw).decode(), "bytes": len(raw)}


def decode_rows(rows: Sequence[FailureRow], settings: Settings) -> list[Decoded | Failure]:
    """The stored bytes through the configured codec and schema registry, as the service
    decodes them; `ConnectionFailed` when the registry does not answer."""
    registry = settings.schema_registry_url
    avro = AvroDecoder(schema_registry_client(registry)) if registry else None
    return decode_batch([row.message() for row in rows], settings.format, avro)


def event_json(event: ChangeEvent) -> dict[str, Any]:
    """A decoded change for people and JSON (values that JSON lacks become strings)."""
    data: dict[str, Any] = {
        "table": event.table,
        "op": event.op.value,
        "key": dict(event.key),
        "after": None if event.after is None else dict(event.after),
        "position": list(event.position.parts),
        "tx": event.tx,
        "source_ts_ms": event.source_ts_ms,
        "connector": event.connector,
    }
    if event.unavailable:
        data["unavailable"] = sorted(event.unavailable)
    parsed: dict[str, Any] = orjson.loads(orjson.dumps(data, default=str))
    return parsed


def describe(row: FailureRow, settings: Settings) -> dict[str, Any]:
    """`show`'s document: the row, its raw bytes, and the message decoded with the
    current configuration (`event`), or why it does not decode (`decode_error`)."""
    document = row.as_dict()
    document["raw_key"], document["raw_value"] = raw_json(row.raw_key), raw_json(row.raw_value)
    event: dict[str, Any] | None = None
    problem: str | None = None
    try:
        item = decode_rows([row], settings)[0]
    except ConnectionFailed as exc:
        problem = f"not decoded: {exc}"
    else:
        if isinstance(item, Failure):
            problem = item.detail
        elif item.event is None:
            problem = "a tombstone: no change to apply"
        else:
            event = event_json(item.event)
    document["event"], document["decode_error"] = event, problem
    return document


def _row(data: sa.RowMapping) -> FailureRow:
    raw_key, raw_value = data.get("raw_key"), data.get("raw_value")
    return FailureRow(
        id=data["id"],
        topic=data["topic"],
        partition=data["kafka_partition"],
        offset=data["kafka_offset"],
        reason=data["reason"],
        detail=data["detail"],
        source_table=data["source_table"],
        status=data["status"],
        created_at=data["created_at"],
        resolved_at=data["resolved_at"],
        retried_at=data["retried_at"],
        attempts=data["attempts"],
        retry_outcome=data["retry_outcome"],
        note=data["note"],
        dead_letter=data["dead_letter"],
        dead_letter_detail=data["dead_letter_detail"],
        raw_key=None if raw_key is None else bytes(raw_key),
        raw_value=None if raw_value is None else bytes(raw_value),
    )


def select_sql(
    schema: str, where: str, *, raw: bool, after: bool, limit: bool, newest: bool = False
) -> str:
    """Rows matching `where` in id order (`newest` first); `after` pages by `:after`,
    `limit` by `:limit`."""
    columns = LIST_COLUMNS + (", raw_key, raw_value" if raw else "")
    paged = " AND id > :after" if after else ""
    limited = " LIMIT :limit" if limit else ""
    return (
        f"SELECT {columns} FROM {quote_ident(schema)}.failures WHERE ({where}){paged} "
        f"ORDER BY id{' DESC' if newest else ''}{limited}"
    )


def list_failures(
    engine: sa.Engine, schema: str, which: FailureFilter, *, newest: bool = False
) -> list[FailureRow]:
    """The rows `which` names, oldest (or `newest`) first, at most `which.limit`, without
    raw bytes."""
    where, params = which.where()
    limited = which.limit is not None
    sql = sa.text(select_sql(schema, where, raw=False, after=False, limit=limited, newest=newest))
    if which.limit is not None:
        params["limit"] = which.limit

    def read() -> list[FailureRow]:
        with engine.connect() as conn:
            return [_row(r) for r in conn.execute(sql, params).mappings()]

    return guard(read)


def count_failures(engine: sa.Engine, schema: str, which: FailureFilter) -> int:
    where, params = which.where()
    sql = sa.text(f"SELECT count(*) FROM {quote_ident(schema)}.failures WHERE {where}")

    def read() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sql, params).scalar() or 0)

    found = guard(read)
    return found if which.limit is None else min(found, which.limit)


def failure_page(
    conn: sa.Connection, schema: str, which: FailureFilter, after: int, size: int
) -> list[FailureRow]:
    """The next `size` rows after id `after`, raw bytes included (for retries)."""
    where, params = which.where()
    sql = sa.text(select_sql(schema, where, raw=True, after=True, limit=True))
    return [
        _row(r) for r in conn.execute(sql, {**params, "after": after, "limit": size}).mappings()
    ]


def get_failure(engine: sa.Engine, schema: str, failure_id: int) -> FailureRow:
    """One row with its raw bytes; `UsageError` when there is none of that id."""
    sql = sa.text(select_sql(schema, "id = :id", raw=True, after=False, limit=False))

    def read() -> FailureRow | None:
        with engine.connect() as conn:
            found = conn.execute(sql, {"id": failure_id}).mappings().first()
        return None if found is None else _row(found)

    row = guard(read)
    if row is None:
        raise UsageError(f"no failure {failure_id} in {schema}.failures", value=str(failure_id))
    return row


def missing_ids(engine: sa.Engine, schema: str, ids: Sequence[int]) -> list[int]:
    """The ids among `ids` that name no failure row."""
    sql = sa.text(f"SELECT id FROM {quote_ident(schema)}.failures WHERE id = ANY(:ids)")

    def read() -> set[int]:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(sql, {"ids": list(ids)})}

    found = guard(read)
    return sorted(set(ids) - found)


def require_ids(engine: sa.Engine, schema: str, ids: Sequence[int]) -> None:
    """`UsageError` naming the first id with no row; nothing is changed before."""
    missing = missing_ids(engine, schema, ids) if ids else []
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(
            f"no failure {missing[0]}{more} in {schema}.failures", value=str(missing[0])
        )


@dataclass(frozen=True)
class Resolved:
    """What `resolve_failures` did: the ids it closed, and each other id's status."""

    resolved: tuple[int, ...]
    not_open: dict[int, str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "resolved": list(self.resolved),
            "not_open": {str(k): v for k, v in sorted(self.not_open.items())},
        }


def resolve_failures(engine: sa.Engine, schema: str, ids: Sequence[int], note: str) -> Resolved:
    """Close the open rows among `ids` without applying them: status `resolved`,
    `resolved_at`, and `note` (why; required). Rows already retried or resolved keep
    their state and are reported; an id with no row is a `UsageError`, before anything
    changes."""
    text = note.strip()
    if not text:
        raise UsageError("a resolution needs a note (--note): say why it is not applied")
    if not ids:
        raise UsageError("name the failures to resolve by id")
    require_ids(engine, schema, ids)
    s = quote_ident(schema)
    close = sa.text(
        f"UPDATE {s}.failures SET status = '{RESOLVED}', resolved_at = now(), note = :note "
        f"WHERE id = ANY(:ids) AND status = '{OPEN}' RETURNING id"
    )
    others = sa.text(f"SELECT id, status FROM {s}.failures WHERE id = ANY(:ids)")

    def write() -> Resolved:
        with engine.begin() as conn:
            params = {"ids": sorted(set(ids)), "note": printable(text, MAX_NOTE)}
            done = sorted(row[0] for row in conn.execute(close, params))
            rest = {i: st for i, st in conn.execute(others, params) if i not in done}
        return Resolved(tuple(done), rest)

    return guard(write)
