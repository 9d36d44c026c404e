"""Connections to a MariaDB source from a `mariadb://` (or `mysql://`) URL.

    mariadb://cdc_recon@127.0.0.1:13306/source      what `scripts/stack env` exports
    mysql://user:password@db.example:3306/shop      the same, for a MySQL server

Every session is utf8mb4 (four-byte characters such as emoji travel intact), reads and
writes times in UTC (`time_zone = '+00:00'`: a TIMESTAMP column comes back as the UTC
instant Debezium reports), runs outside autocommit (the caller commits), and sends values
as parameters, never as text in the statement. The password, when the URL has one, is
never part of `str(url)` or of an error.

    >>> url = parse_url("mariadb://cdc_recon@127.0.0.1:13306/source")  # doctest: +SKIP
    >>> with connect(url) as conn:  # doctest: +SKIP
    ...     with conn.cursor() as cur:
    ...         cur.execute("SELECT 1")
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pymysql.cursors

from cdc_recon.exceptions import ConfigError
from cdc_recon.mariadb.errors import unreachable

SCHEMES = ("mariadb", "mysql", "mariadb+pymysql", "mysql+pymysql")
DEFAULT_PORT = 3306


@dataclass(frozen=True)
class MariaDbUrl:
    """Where a MariaDB database is; `str()` leaves the password out."""

    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)

    def __str__(self) -> str:
        secret = ":***" if self.password else ""
        return f"mariadb://{self.user}{secret}@{self.host}:{self.port}/{self.database}"


def is_mariadb_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def parse_url(url: str) -> MariaDbUrl:
    """A `mariadb://` URL; ConfigError (without the password) when it is not one."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(f"not a MariaDB URL (mariadb://user@host:port/db): {parts.scheme}://...")
    database = parts.path.lstrip("/")
    if not parts.hostname or not parts.username or not database:
        raise ConfigError("a MariaDB URL needs a user, a host and a database: mariadb://user@host:port/db")
    return MariaDbUrl(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORT,
        user=urllib.parse.unquote(parts.username),
        password=urllib.parse.unquote(parts.password or ""),
        database=database,
    )


def open_connection(url: MariaDbUrl, *, name: str = "source", timeout: float = 10.0) -> Any:
    """A new connection; DatabaseUnavailable naming `name` when it cannot be opened."""
    try:
        return pymysql.connect(
            host=url.host,
            port=url.port,
            user=url.user,
            password=url.password,
            database=url.database,
            charset="utf8mb4",
            autocommit=False,
            connect_timeout=max(1, int(timeout)),
            init_command="SET time_zone = '+00:00'",
            cursorclass=pymysql.cursors.Cursor,
        )
    except pymysql.err.OperationalError as exc:
        raise unreachable(name, url, exc) from exc


@contextlib.contextmanager
def connect(url: MariaDbUrl, *, name: str = "source", timeout: float = 10.0) -> Iterator[Any]:
    """`open_connection` as a context: rolled back unless committed, then closed."""
    conn = open_connection(url, name=name, timeout=timeout)
    try:
        yield conn
    finally:
        with contextlib.suppress(pymysql.err.Error):
            conn.rollback()
        conn.close()
