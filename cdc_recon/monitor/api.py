"""The endpoints of the monitoring server, as plain request → response functions.

    GET  /                    the status page (static files under /static/)
    GET  /metrics             Prometheus text format
    GET  /health/live         200 while the process serves
    GET  /health/ready        200 when the target and Kafka answer and partitions are owned
    GET  /api/status          this instance and the control tables (`status_document`)
    GET  /api/history         lag and counts of the last hour, for the page's charts
    GET  /api/sweeps          latest sweeper runs              ?limit=
    GET  /api/missed          latest missed changes, per hour  ?limit=&status=&hours=
    GET  /api/failures        quarantined messages, newest first
                              ?limit=&status=&reason=&table=&topic=&since=&until=
                              (lists comma-separated; status: all unless given)
    GET  /api/failures/{id}   one, decoded with the current configuration (`failures show`)
    POST /api/failures/retry  {"ids"? | "reason"?, "table"?, "topic"?, "since"?, "until"?,
                              "status"?, "limit"?, "dry_run"?} → the retry's summary
    POST /api/failures/resolve  {"ids", "note"} → the ids closed
    GET  /api/review          the reconciliation's review queue ?limit=
    GET  /api/trace           one key's story (`cdc-recon trace`) ?table=&key=&from=&to=
                              (key: one value, or a JSON array of the key's values);
                              404 with the same document when nothing names the key
    POST /api/replay          {"from", "to"?, "table"?, "source"?, "dry_run"?} → {"job_id"}
    GET  /api/jobs[/{id}]     replay jobs and their progress

With a token configured, everything but the health checks and the page's static files
needs `Authorization: Bearer <token>` (compared in constant time, never logged).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hmac
import importlib.resources
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from cdc_recon.apply import failures as quarantine
from cdc_recon.apply.metrics import ServiceMonitor
from cdc_recon.apply.retry import retry_failures
from cdc_recon.config import Settings
from cdc_recon.exceptions import CdcReconError, JobsBusy, UsageError
from cdc_recon.monitor import figures as db
from cdc_recon.monitor.jobs import ReplayJobs, parse_request
from cdc_recon.monitor.poller import StatusPoller, readiness, status_document
from cdc_recon.monitor.tracing import trace_request
from cdc_recon.trace.reader import unknown_line

JSON = "application/json"
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
OPEN_PATHS = ("/health/", "/static/")
MAX_LIMIT = 500


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes | memoryview):
        return None
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"not JSON: {type(value).__name__}")


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(data, default=_default))


def error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(request.body or b"{}")
    except orjson.JSONDecodeError:
        raise UsageError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise UsageError("the body must be a JSON object")
    return body


def _names(value: Any, field: str) -> list[str] | None:
    """A name, comma-separated names or a list of them (None when absent)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UsageError(f'"{field}" must be a name or a list of names')


FILTER_FIELDS = ("reason", "table", "topic", "since", "until", "status")


def failure_filter(
    fields: Mapping[str, Any], *, default_status: tuple[str, ...], limit: int | None
) -> quarantine.FailureFilter:
    """The query's (or a JSON body's) failure filter; `UsageError` names a bad field."""
    for name in ("since", "until"):
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise UsageError(f'"{name}" must be a time: ISO-8601, now, or relative (-2h)')
    ids = fields.get("ids")
    if ids is not None and not (
        isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    ):
        raise UsageError('"ids" must be a list of failure ids')
    return quarantine.failure_filter(
        ids=ids,
        reasons=_names(fields.get("reason"), "reason"),
        tables=_names(fields.get("table"), "table"),
        topics=_names(fields.get("topic"), "topic"),
        since=fields.get("since") or None,
        until=fields.get("until") or None,
        statuses=_names(fields.get("status"), "status"),
        limit=limit,
        default_statuses=default_status,
    )


def _limit(query: Mapping[str, str], default: int = 50) -> int:
    try:
        value = int(query.get("limit", default))
    except ValueError:
        raise UsageError("limit must be a number") from None
    return max(1, min(value, MAX_LIMIT))


class Api:
    """Routes requests; holds what the endpoints read (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        monitor: ServiceMonitor,
        poller: StatusPoller,
        engine: sa.Engine,
        jobs: ReplayJobs,
    ) -> None:
        self.settings = settings
        self.monitor = monitor
        self.poller = poller
        self.engine = engine
        self.jobs = jobs
        self.started = time.time()
        token = settings.monitoring.token
        self._expected = f"Bearer {token.get_secret_value()}".encode() if token else None
        self._get: dict[str, Callable[[Request], Response]] = {
            "/": lambda r: self._static("index.html"),
            "/metrics": self._metrics,
            "/health/live": lambda r: json_response({"status": "alive"}),
            "/health/ready": self._ready,
            "/api/status": self._status,
            "/api/history": lambda r: json_response(self.monitor.history()),
            "/api/sweeps": self._sweeps,
            "/api/missed": self._missed,
            "/api/failures": self._failures,
            "/api/review": self._review,
            "/api/trace": self._trace,
            "/api/jobs": lambda r: json_response(self.jobs.all()),
        }
        self._post: dict[str, Callable[[Request], Response]] = {
            "/api/replay": self._replay,
            "/api/failures/retry": self._retry,
            "/api/failures/resolve": self._resolve,
        }

    def handle(self, request: Request) -> Response:
        if not self._authorised(request):
            return Response(
                401,
                b'{"error":"missing or wrong bearer token"}',
                headers={"WWW-Authenticate": 'Bearer realm="cdc-recon"'},
            )
        try:
            return self._route(request)
        except UsageError as exc:
            return error(400, str(exc))
        except JobsBusy as exc:
            return error(409, str(exc))
        except CdcReconError as exc:
            return error(503, str(exc))

    def _authorised(self, request: Request) -> bool:
        if self._expected is None or request.path.startswith(OPEN_PATHS):
            return True
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, self._expected)

    def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if request.method == "POST":
            post = self._post.get(path)
            if post is not None:
                return post(request)
            return error(405 if path in self._get else 404, f"no POST {path}")
        if request.method not in ("GET", "HEAD"):
            return error(405, f"method {request.method} not allowed")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        if path.startswith("/api/failures/"):
            return self._failure(path.removeprefix("/api/failures/"))
        if path.startswith("/api/jobs/"):
            found = self.jobs.get(path.removeprefix("/api/jobs/"))
            return json_response(found) if found else error(404, "no such job")
        handler = self._get.get(path)
        if handler is None:
            return error(405 if path in self._post else 404, f"no GET {path}")
        return handler(request)

    # -- endpoints -----------------------------------------------------------------------

    def _static(self, name: str) -> Response:
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            return error(404, "no such file")
        resource = importlib.resources.files("cdc_recon.monitor") / "static" / name
        if not resource.is_file():
            return error(404, "no such file")
        return Response(
            200, resource.read_bytes(), STATIC_TYPES[suffix], {"Cache-Control": "no-cache"}
        )

    def _metrics(self, request: Request) -> Response:
        return Response(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)

    def _ready(self, request: Request) -> Response:
        found = readiness(
            self.poller.latest(),
            self.monitor.snapshot(),
            time.time(),
            self.settings.monitoring.refresh,
        )
        return json_response(found, 200 if found["status"] == "ready" else 503)

    def _status(self, request: Request) -> Response:
        return json_response(
            status_document(
                self.settings, self.monitor.snapshot(), self.poller.latest(), self.started
            )
        )

    @property
    def _schema(self) -> str:
        return self.settings.control_schema

    def _sweeps(self, request: Request) -> Response:
        limit = _limit(request.query)
        rows = db.read_list(self.engine, lambda c: db.latest_sweeps(c, self._schema, limit))
        return json_response({"items": rows})

    def _missed(self, request: Request) -> Response:
        limit, status = _limit(request.query), request.query.get("status") or None
        try:
            hours = max(1, min(int(request.query.get("hours", 24)), 24 * 31))
        except ValueError:
            raise UsageError("hours must be a number") from None

        def read(conn: sa.Connection) -> dict[str, Any]:
            return {
                "items": db.latest_missed(conn, self._schema, limit, status),
                "by_hour": db.missed_by_hour(conn, self._schema, hours),
            }

        return json_response(db.read_list(self.engine, read))

    def _failures(self, request: Request) -> Response:
        which = failure_filter(request.query, default_status=(), limit=_limit(request.query))
        rows = quarantine.list_failures(self.engine, self._schema, which, newest=True)
        return json_response({"items": [row.as_dict() for row in rows]})

    def _failure(self, name: str) -> Response:
        if not name.isdigit():
            return error(404, "no such failure")
        try:
            row = quarantine.get_failure(self.engine, self._schema, int(name))
        except UsageError:
            return error(404, "no such failure")
        return json_response(quarantine.describe(row, self.settings))

    def _retry(self, request: Request) -> Response:
        """A retry runs while the request waits (`cdc-recon failures retry` shows progress
        for large ones); its own applier, beside the service's."""
        body = _json_body(request)
        unknown = set(body) - {"ids", "dry_run", "limit", *FILTER_FIELDS}
        if unknown:
            raise UsageError(f"unknown field(s): {', '.join(sorted(unknown))}")
        if not body.get("ids") and not any(body.get(f) for f in FILTER_FIELDS):
            raise UsageError('name the failures to retry: "ids", or a filter ("reason", ...)')
        dry_run, limit = body.get("dry_run", False), body.get("limit")
        if not isinstance(dry_run, bool):
            raise UsageError('"dry_run" must be true or false')
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise UsageError('"limit" must be a number')
        default = ("open", "retried") if body.get("ids") else ("open",)
        which = failure_filter(body, default_status=default, limit=limit)
        quarantine.require_ids(self.engine, self._schema, which.ids)
        summary = retry_failures(self.engine, self.settings, which, dry_run=dry_run)
        return json_response(summary.as_dict())

    def _resolve(self, request: Request) -> Response:
        body = _json_body(request)
        ids, note = body.get("ids"), body.get("note")
        if not isinstance(note, str):
            raise UsageError('"note" must say why the failures are closed unapplied')
        which = failure_filter({"ids": ids}, default_status=(), limit=None)
        done = quarantine.resolve_failures(self.engine, self._schema, which.ids, note)
        return json_response(done.as_dict())

    def _review(self, request: Request) -> Response:
        limit = _limit(request.query)
        rows = db.read_list(self.engine, lambda c: db.review_items(c, self._schema, limit))
        if rows is None:
            note = "no review queue in the target yet (reconciliation has not created it)"
            return json_response({"items": [], "note": note})
        return json_response({"items": rows})

    def _trace(self, request: Request) -> Response:
        found = trace_request(self.settings, request.query, self.engine)
        document = found.as_dict()
        if not found.known:
            document["error"] = unknown_line(document)
        return json_response(document, 200 if found.known else 404)

    def _replay(self, request: Request) -> Response:
        body = _json_body(request)
        job = self.jobs.submit(parse_request(body, dt.datetime.now(dt.UTC)))
        location = f"/api/jobs/{job.id}"
        return Response(
            202,
            orjson.dumps({"job_id": job.id, "url": location}),
            headers={"Location": location},
        )
