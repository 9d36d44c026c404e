"""The monitoring server's routing, auth, page and replay jobs, without Kafka or a database."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from cdc_recon.apply.metrics import ServiceMonitor
from cdc_recon.config import Settings, load_settings
from cdc_recon.exceptions import UsageError
from cdc_recon.monitor.api import Api, Request, failure_filter
from cdc_recon.monitor.jobs import ReplayJobs, parse_request
from cdc_recon.monitor.poller import PollResult
from cdc_recon.monitor.server import MonitoringServer
from cdc_recon.replay import ReplaySummary

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


class FakePoller:
    def __init__(self, result: PollResult | None = None) -> None:
        self.result = result or PollResult(None, "down", None, 0.0)

    def latest(self) -> PollResult:
        return self.result


class SlowReplay:
    """A replay_window stand-in that reports progress and waits to be released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[dict[str, Any]] = []

    def __call__(self, settings: Settings, **kwargs: Any) -> ReplaySummary:
        self.calls.append(kwargs)
        kwargs["progress"](5, 10)
        assert self.release.wait(10)
        if kwargs["source"] == "source-db":
            raise UsageError("no source_url configured")
        return ReplaySummary(read=10, applied=3, duplicates=7)


def make_api(replay: Any = None, **monitoring: Any) -> Api:
    settings = load_settings(monitoring=monitoring)
    jobs = ReplayJobs(settings, replay=replay or SlowReplay())
    return Api(settings, ServiceMonitor(), FakePoller(), None, jobs)  # type: ignore[arg-type]


def body(response: Any) -> Any:
    return json.loads(response.body)


def test_health_and_unknown_paths() -> None:
    api = make_api()
    assert body(api.handle(Request("GET", "/health/live"))) == {"status": "alive"}
    ready = api.handle(Request("GET", "/health/ready"))
    assert ready.status == 503
    assert body(ready)["checks"]["partitions"] == "not joined the group yet"
    assert api.handle(Request("GET", "/nope")).status == 404
    assert api.handle(Request("GET", "/api/replay")).status == 405
    assert api.handle(Request("DELETE", "/api/status")).status == 405


def test_metrics_are_prometheus_text() -> None:
    response = make_api().handle(Request("GET", "/metrics"))
    assert response.status == 200 and response.content_type.startswith("text/plain")
    assert b"# TYPE cdc_recon_events_applied_total counter" in response.body


def test_token_is_required_when_configured() -> None:
    api = make_api(host="0.0.0.0", token="s3cret")
    assert api.handle(Request("GET", "/api/status")).status == 401
    assert api.handle(Request("GET", "/metrics")).status == 401
    wrong = {"authorization": "Bearer nope"}
    assert api.handle(Request("GET", "/api/jobs", headers=wrong)).status == 401
    right = {"authorization": "Bearer s3cret"}
    assert api.handle(Request("GET", "/api/jobs", headers=right)).status == 200
    # probes and the page's files need no token: they show no data
    assert api.handle(Request("GET", "/health/live")).status == 200
    assert api.handle(Request("GET", "/static/app.js")).status == 200


def test_status_page_is_served_offline() -> None:
    api = make_api()
    page = api.handle(Request("GET", "/"))
    assert page.status == 200 and page.content_type.startswith("text/html")
    html = page.body.decode()
    assert "/static/app.js" in html and "http" not in html.replace("http-equiv", "")
    script = api.handle(Request("GET", "/static/app.js")).body.decode()
    assert "fetch(" in script and "https://" not in script
    assert api.handle(Request("GET", "/static/../api.py")).status == 404
    assert api.handle(Request("GET", "/static/missing.js")).status == 404


def test_parse_replay_request() -> None:
    request = parse_request({"from": "-2h", "table": "public.a", "source": "source-db"}, NOW)
    assert (request.start, request.end) == (NOW - dt.timedelta(hours=2), NOW)
    assert request.tables == ("public.a",) and request.source == "source-db"
    for bad, message in (
        ({}, "must be times"),
        ({"from": "-1h", "to": "-2h"}, "not before|empty"),
        ({"from": "-1h", "source": "s3"}, "source"),
        ({"from": "-1h", "table": 3}, "table"),
        ({"from": "-1h", "dry_run": "yes"}, "dry_run"),
        ({"from": "-1h", "limit": 1}, "unknown field"),
    ):
        with pytest.raises(UsageError, match=message):
            parse_request(bad, NOW)


def test_replay_job_progress_and_one_at_a_time() -> None:
    replay = SlowReplay()
    api = make_api(replay)
    started = api.handle(Request("POST", "/api/replay", body=b'{"from": "-1h", "dry_run": true}'))
    assert started.status == 202
    job_id = body(started)["job_id"]
    assert started.headers["Location"] == f"/api/jobs/{job_id}"
    busy = api.handle(Request("POST", "/api/replay", body=b'{"from": "-1h"}'))
    assert busy.status == 409
    running = body(api.handle(Request("GET", f"/api/jobs/{job_id}")))
    assert running["status"] == "running" and running["request"]["dry_run"] is True
    replay.release.set()
    _wait(lambda: body(api.handle(Request("GET", f"/api/jobs/{job_id}")))["status"] == "done")
    done = body(api.handle(Request("GET", f"/api/jobs/{job_id}")))
    assert done["progress"] == {"read": 5, "total": 10}
    assert done["summary"]["applied"] == 3 and done["summary"]["duplicates"] == 7
    assert replay.calls[0]["dry_run"] is True and replay.calls[0]["source"] == "kafka"
    assert api.handle(Request("GET", "/api/jobs/unknown")).status == 404


def test_failed_replay_job_says_why() -> None:
    replay = SlowReplay()
    replay.release.set()
    api = make_api(replay)
    started = api.handle(
        Request("POST", "/api/replay", body=b'{"from":"-1h","source":"source-db"}')
    )
    url = f"/api/jobs/{body(started)['job_id']}"
    _wait(lambda: body(api.handle(Request("GET", url)))["status"] != "running")
    failed = body(api.handle(Request("GET", url)))
    assert failed["status"] == "failed" and "no source_url" in failed["error"]
    bad = api.handle(Request("POST", "/api/replay", body=b"[1]"))
    assert bad.status == 400 and "JSON object" in body(bad)["error"]


def _wait(condition: Any, timeout: float = 10.0) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        event.wait(0.02)
    pytest.fail("condition not met")


@pytest.fixture
def served() -> Iterator[MonitoringServer]:
    api = make_api(token="t0ken")
    server = MonitoringServer(api, "127.0.0.1", 0).start()
    yield server
    server.stop()


def test_server_over_http(served: MonitoringServer) -> None:
    with urllib.request.urlopen(f"{served.url}/health/live", timeout=5) as response:
        assert response.status == 200 and json.load(response) == {"status": "alive"}
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{served.url}/api/jobs", timeout=5)
    info.value.close()
    assert info.value.code == 401 and info.value.headers["WWW-Authenticate"].startswith("Bearer")
    request = urllib.request.Request(
        f"{served.url}/api/jobs", headers={"Authorization": "Bearer t0ken"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response) == []


def test_server_refuses_a_busy_port(served: MonitoringServer) -> None:
    from cdc_recon.exceptions import ConfigError

    with pytest.raises(ConfigError, match="cannot listen"):
        MonitoringServer(make_api(), "127.0.0.1", served.port)


def test_failure_filters_from_a_query_or_a_body() -> None:
    which = failure_filter(
        {"reason": "unmapped, rejected", "table": ["public.a"], "since": "-1h"},
        default_status=(),
        limit=5,
    )
    assert which.reasons == ("unmapped", "rejected") and which.tables == ("public.a",)
    assert which.statuses == () and which.limit == 5 and which.since is not None
    assert failure_filter({"status": "all"}, default_status=("open",), limit=None).statuses == ()
    for bad, message in (
        ({"reason": 3}, '"reason"'),
        ({"since": 5}, '"since"'),
        ({"until": "soon"}, "invalid time"),
        ({"status": "closed"}, "unknown failure status"),
        ({"ids": ["1"]}, '"ids"'),
        ({"ids": [True]}, '"ids"'),
    ):
        with pytest.raises(UsageError, match=message):
            failure_filter(bad, default_status=("open",), limit=None)


def test_failure_routes_refuse_bad_requests_before_the_database() -> None:
    api = make_api()  # no engine: each of these must answer without one
    for path, payload, message in (
        ("/api/failures/retry", b"[]", "JSON object"),
        ("/api/failures/retry", b"{}", "name the failures"),
        ("/api/failures/retry", b'{"ids": [1], "force": true}', "unknown field"),
        ("/api/failures/retry", b'{"ids": [1], "dry_run": "yes"}', "dry_run"),
        ("/api/failures/retry", b'{"reason": "x", "limit": "9"}', "limit"),
        ("/api/failures/resolve", b'{"ids": [1]}', "note"),
        ("/api/failures/resolve", b'{"ids": [], "note": "n"}', "by id"),
        ("/api/failures/resolve", b'{"ids": [1], "note": "  "}', "needs a note"),
    ):
        response = api.handle(Request("POST", path, body=payload))
        assert response.status == 400, (path, payload)
        assert message in body(response)["error"], (path, payload)
    assert api.handle(Request("GET", "/api/failures/retry")).status == 404
    assert api.handle(Request("GET", "/api/failures/x1")).status == 404
    assert api.handle(Request("POST", "/api/failures")).status == 405
    assert api.handle(Request("GET", "/api/failures", {"since": "soon"})).status == 400


def test_failure_routes_need_the_token() -> None:
    api = make_api(host="0.0.0.0", token="s3cret")
    for method, path in (
        ("GET", "/api/failures"),
        ("GET", "/api/failures/1"),
        ("POST", "/api/failures/retry"),
        ("POST", "/api/failures/resolve"),
    ):
        assert api.handle(Request(method, path, body=b"{}")).status == 401, path
