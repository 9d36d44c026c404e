"""Engines for the source and target databases (driver errors: `cdc_recon.pg.errors`)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr

from cdc_recon.config import mask_url
from cdc_recon.exceptions import DatabaseUnavailable
from cdc_recon.pg.errors import unreachable


def sqlalchemy_url(url: str | SecretStr) -> sa.URL:
    """A libpq-style `postgresql://` URL as SQLAlchemy's psycopg2 URL.

    SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3; cdc_recon uses psycopg2 for
    its COPY support, so the driver is named explicitly.
    """
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    parsed = sa.make_url(raw)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def create_engine(url: str | SecretStr, *, name: str = "database", **kwargs: Any) -> sa.Engine:
    """An engine for `url`; `name` ("source", "target") labels connection errors."""
    try:
        parsed = sqlalchemy_url(url)
        return sa.create_engine(parsed, pool_pre_ping=True, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raw = url.get_secret_value() if isinstance(url, SecretStr) else url
        raise DatabaseUnavailable(
            f"bad {name} database URL {mask_url(raw)!r}: {exc}", service=name
        ) from exc


def check_connection(engine: sa.Engine, *, name: str = "database") -> None:
    """Raise `DatabaseUnavailable` with a clear message when `engine` cannot connect."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        shown = engine.url.render_as_string(hide_password=True)
        raise unreachable(name, exc, at=shown, service=name) from exc


def probe_transaction(engine: sa.Engine) -> tuple[str, str, float]:
    """Server version, wal_level and the milliseconds a small write transaction took."""
    started = time.monotonic()
    with engine.begin() as conn:
        version = str(conn.execute(sa.text("SHOW server_version")).scalar_one())
        wal_level = str(conn.execute(sa.text("SHOW wal_level")).scalar_one())
        conn.execute(sa.text("CREATE TEMP TABLE cdcr_probe (v int) ON COMMIT DROP"))
        conn.execute(sa.text("INSERT INTO cdcr_probe VALUES (1)"))
    return version, wal_level, (time.monotonic() - started) * 1000
