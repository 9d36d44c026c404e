"""The monitoring HTTP server of `cdc-recon run`: the stdlib's threading server, on a thread.

`serve_monitoring(settings, monitor)` starts everything the endpoints need (the status
thread with its own small engine, a Kafka probe, the replay jobs, the server) and stops
it on exit; the service loop never waits for any of it.

    >>> with serve_monitoring(settings, monitor) as server:   # doctest: +SKIP
    ...     print(server.url)                                 # http://127.0.0.1:9464
"""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cdc_recon.apply.metrics import ServiceMonitor
from cdc_recon.config import Settings
from cdc_recon.exceptions import ConfigError
from cdc_recon.kafka.probe import ClusterProbe
from cdc_recon.monitor.api import Api, Request, Response
from cdc_recon.monitor.jobs import ReplayJobs
from cdc_recon.monitor.poller import StatusPoller
from cdc_recon.pg.engine import create_engine

LOG = logging.getLogger("cdc_recon.http")
MAX_BODY = 64 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: Api


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "cdc-recon"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
        self._serve("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Response(413, b'{"error":"body too large"}'), method)
            return
        body = self.rfile.read(length) if length > 0 else b""
        request = Request(
            method=method,
            path=url.path,
            query=dict(urllib.parse.parse_qsl(url.query)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            response = self.server.api.handle(request)
        except Exception:  # a bug in one endpoint must not kill the server thread
            LOG.exception("error serving %s %s", method, url.path)
            response = Response(500, b'{"error":"internal error"}')
        self._send(response, method)

    def _send(self, response: Response, method: str) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s %s", self.address_string(), format % args)  # request line only


class MonitoringServer:
    """`api` served on `host:port` from a daemon thread until `stop()`."""

    def __init__(self, api: Api, host: str, port: int) -> None:
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(
                f"monitoring: cannot listen on {host}:{port}: {exc.strerror}",
                key="monitoring.port",
            ) from exc
        self._server.api = api
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cdcr-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    def start(self) -> MonitoringServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextlib.contextmanager
def serve_monitoring(
    settings: Settings, monitor: ServiceMonitor
) -> Iterator[MonitoringServer | None]:
    """Metrics, health, API and page of `cdc-recon run` (None when `monitoring.enabled` is
    false); see the module docstring."""
    config = settings.monitoring
    if not config.enabled:
        yield None
        return
    engine = create_engine(settings.target_url, name="target", pool_size=2, max_overflow=4)
    poller = StatusPoller(settings, engine, ClusterProbe(settings.kafka_bootstrap))
    api = Api(settings, monitor, poller, engine, ReplayJobs(settings))
    try:
        server = MonitoringServer(api, config.host, config.port)
        poller.start()
        server.start()
        LOG.info("monitoring on %s (metrics at /metrics)", server.url)
        try:
            yield server
        finally:
            server.stop()
            poller.stop()
    finally:
        engine.dispose()
