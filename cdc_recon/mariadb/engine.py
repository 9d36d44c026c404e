"""SQLAlchemy engines for a MariaDB database (`mysql+pymysql`), for set-based readers.

Reconciliation runs its statements through SQLAlchemy on both sides; this is the engine
of a MariaDB side. Its sessions are those of `connection.py`: utf8mb4, UTC
(`time_zone = '+00:00'`, so a TIMESTAMP reads as its UTC instant), values as
parameters. The password travels in the URL object only, never in `str(url)`.

    >>> engine = create_engine(parse_url(os.environ["CDC_RECON_MARIADB_URL"]))  # doctest: +SKIP
    >>> with engine.connect() as conn:                                          # doctest: +SKIP
    ...     conn.exec_driver_sql("SELECT 1").scalar_one()
    1
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from cdc_recon.mariadb.connection import MariaDbUrl

SESSION = "SET time_zone = '+00:00'"


def sqlalchemy_url(url: MariaDbUrl) -> sa.URL:
    return sa.URL.create(
        "mysql+pymysql",
        username=url.user,
        password=url.password or None,
        host=url.host,
        port=url.port,
        database=url.database,
        query={"charset": "utf8mb4"},
    )


def create_engine(url: MariaDbUrl, **kwargs: Any) -> sa.Engine:
    """An engine whose sessions are utf8mb4 and UTC; `kwargs` go to SQLAlchemy."""
    connect_args = {"init_command": SESSION, **kwargs.pop("connect_args", {})}
    return sa.create_engine(
        sqlalchemy_url(url), pool_pre_ping=True, connect_args=connect_args, **kwargs
    )
