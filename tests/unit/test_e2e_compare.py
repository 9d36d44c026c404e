"""The end-to-end tests' comparison helper and TCP proxy (pure or loopback only)."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import uuid
from decimal import Decimal

import pytest

from tests.e2e.compare import diff_rows, normalise
from tests.e2e.proxy import TcpProxy


def test_normalise_makes_equal_data_equal() -> None:
    berlin = dt.timezone(dt.timedelta(hours=1))
    moment = dt.datetime(2024, 1, 1, 12, 0, 0, 5, tzinfo=dt.UTC)
    assert normalise(moment.astimezone(berlin)) == normalise(moment)
    assert normalise(Decimal("1.50")) == normalise(Decimal("1.5"))
    assert str(normalise(Decimal("100.00"))) == str(normalise(Decimal("1E+2")))
    assert normalise({"b": [1, {"y": 2, "x": 1}], "a": "ü"}) == normalise(
        {"a": "ü", "b": [1, {"x": 1, "y": 2}]}
    )
    assert normalise(memoryview(b"ab")) == b"ab"
    value = uuid.uuid4()
    assert normalise(value) == str(value)
    assert normalise(Decimal("NaN")).is_nan()


def test_diff_rows_reports_missing_extra_changed_and_lacking_columns() -> None:
    source = {
        (1,): {"id": 1, "name": "a", "bio": "x"},
        (2,): {"id": 2, "name": "b", "bio": "y"},
        (3,): {"id": 3, "name": "c", "bio": None},
    }
    target = {
        (1,): {"id": 1, "name": "a", "bio": "x"},
        (3,): {"id": 3, "name": "C", "bio": None},
        (4,): {"id": 4, "name": "d", "bio": None},
    }
    diff = diff_rows(source, target, names=("s.t", "t.t"))
    assert not diff.ok and diff.rows == 3 and diff.differences == 3
    assert (diff.missing, diff.extra) == (((2,),), ((4,),))
    assert diff.changed == (((3,), {"name": ("c", "C")}),)
    summary = diff.summary()
    assert summary.startswith("s.t -> t.t: 3 rows, 3 differences") and "changed (3,)" in summary
    narrow = {(1,): {"id": 1, "name": "a"}}
    assert diff_rows(source, narrow).columns_missing == ("bio",)
    assert diff_rows(source, dict(source)).ok


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def _round_trip(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"ping")
        return conn.recv(4)


def _cut_off(conn: socket.socket) -> bool:
    """The peer closed (FIN) or reset (RST: it was still in the accept queue) `conn`."""
    with conn:
        try:
            return conn.recv(4) == b""
        except ConnectionResetError:
            return True


def test_proxy_pipes_refuses_when_cut_and_comes_back_on_the_same_port() -> None:
    server, thread = _echo_server()
    try:
        with TcpProxy(server.getsockname()) as proxy:
            port = proxy.port
            assert _round_trip(port) == b"ping"
            open_conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            proxy.cut()
            with pytest.raises(ConnectionRefusedError):
                _round_trip(port)
            assert _cut_off(open_conn), "an open connection is closed or reset by the cut"
            proxy.restore()
            assert proxy.port == port and _round_trip(port) == b"ping"
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes its accept()
        server.close()
        thread.join(5)
