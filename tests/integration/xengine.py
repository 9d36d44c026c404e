"""A MariaDB database of its own per test, beside the PostgreSQL schemas of
`tests/conftest.py`, for reconciliation across engines."""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from cdc_recon.mariadb.connection import MariaDbUrl, connect, parse_url
from cdc_recon.mariadb.sql import quote_ident
from tests.conftest import _from_stack_script


def mariadb_url() -> str:
    """`CDC_RECON_MARIADB_URL`, or the stack's (`scripts/stack up` starts MariaDB)."""
    url = os.environ.get("CDC_RECON_MARIADB_URL") or _from_stack_script().get(
        "CDC_RECON_MARIADB_URL"
    )
    if not url:
        pytest.fail("no MariaDB: set CDC_RECON_MARIADB_URL or run scripts/stack up")
    return url


@dataclass(frozen=True)
class MariaDb:
    """One MariaDB database for the current test; `url` names it."""

    server: MariaDbUrl
    database: str
    raw: str  # the server's URL as configured (it may hold a password: never print it)

    @property
    def url(self) -> str:
        return urllib.parse.urlsplit(self.raw)._replace(path=f"/{self.database}").geturl()

    def table(self, name: str) -> str:
        return f"{self.database}.{name}"

    def run(self, *statements: str, params: Sequence[Any] | None = None) -> None:
        with connect(self.server) as conn, conn.cursor() as cur:
            cur.execute(f"USE {quote_ident(self.database)}")
            for statement in statements:
                cur.execute(statement, params)
            conn.commit()

    def insert(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with connect(self.server) as conn, conn.cursor() as cur:
            cur.execute(f"USE {quote_ident(self.database)}")
            cur.executemany(sql, rows)
            conn.commit()


@pytest.fixture
def mariadb_db() -> Iterator[MariaDb]:
    """A fresh MariaDB database (utf8mb4, its server's default collation), dropped after."""
    raw = mariadb_url()
    server = parse_url(raw)
    name = f"t_{uuid.uuid4().hex[:10]}"
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {quote_ident(name)} CHARACTER SET utf8mb4")
    try:
        yield MariaDb(server, name, raw)
    finally:
        with connect(server) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE {quote_ident(name)}")
