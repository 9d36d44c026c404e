"""`GET /api/trace`: the query's table, key and range as a `TraceRequest`, read with the
server's target engine and a source engine of its own (`cdc_recon.trace.reader`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa

from cdc_recon.config import Settings
from cdc_recon.exceptions import UsageError
from cdc_recon.pg.engine import create_engine
from cdc_recon.timeparse import parse_window
from cdc_recon.trace.reader import Trace, TraceRequest, find_mapping, read_trace

MAX_TRACE_LIMIT = 5000


def key_values(text: str) -> tuple[str, ...]:
    """`7` -> ("7",); `["a", 2]` -> ("a", "2"); `UsageError` for anything else."""
    value = text.strip()
    if not value:
        raise UsageError('"key" is required: a value, or a JSON array of the key\'s values')
    if not value.startswith("["):
        return (value,)
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise UsageError(f'"key" is not a JSON array: {value[:100]!r}') from None
    if not isinstance(parsed, list) or not parsed:
        raise UsageError('"key" must be a non-empty JSON array')
    return tuple(v if isinstance(v, str) else orjson.dumps(v).decode() for v in parsed)


def _limit(query: Mapping[str, str]) -> int:
    try:
        return max(1, min(int(query.get("limit", 1000)), MAX_TRACE_LIMIT))
    except ValueError:
        raise UsageError("limit must be a number") from None


def trace_request(settings: Settings, query: Mapping[str, Any], target: sa.Engine) -> Trace:
    table = str(query.get("table") or "").strip()
    if not table:
        raise UsageError('"table" is required: a mapped table, by its source or target name')
    start, end = parse_window(
        str(query.get("from") or "-7d"), str(query.get("to") or "now"), dt.datetime.now(dt.UTC)
    )
    request = TraceRequest(
        find_mapping(settings, table),
        key_values(str(query.get("key") or "")),
        start,
        end,
        _limit(query),
    )
    source = create_engine(settings.source_url, name="source") if settings.source_url else None
    try:
        return read_trace(target, source, settings, request)
    finally:
        if source is not None:
            source.dispose()
