"""One module per database engine that reconciliation reads (see `base.Dialect`).

base.py        the `Dialect` protocol; `Column` and `TableShape`, the catalog's view
canonical.py   the canonical value forms and row hash both engines compute (pure)
postgresql.py  PostgreSQL: sessions, quoting, pg_catalog, canonical SQL
mariadb.py     MariaDB/MySQL: the same through `cdc_recon.mariadb`

>>> for_url("mariadb://cdc_recon@127.0.0.1:3306/source").name
'mariadb'
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from cdc_recon.mariadb.connection import is_mariadb_url
from cdc_recon.reconcile.dialects.base import Dialect
from cdc_recon.reconcile.dialects.mariadb import MARIADB
from cdc_recon.reconcile.dialects.postgresql import POSTGRESQL

BY_NAME: dict[str, Dialect] = {POSTGRESQL.name: POSTGRESQL, MARIADB.name: MARIADB}


def for_url(url: Any) -> Dialect:
    raw = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url)
    return MARIADB if is_mariadb_url(raw) else POSTGRESQL


def for_engine(engine: sa.Engine) -> Dialect:
    return MARIADB if engine.dialect.name in ("mysql", "mariadb") else POSTGRESQL


def by_name(name: str) -> Dialect:
    return BY_NAME[name]
