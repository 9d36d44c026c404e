"""What a table looks like in one database: columns with their types, and its key.

The catalog queries are the dialect's (`dialects/postgresql.py`, `dialects/mariadb.py`);
`read_shape` asks the dialect of the engine it is given.
"""

from __future__ import annotations

import sqlalchemy as sa

from cdc_recon.reconcile.dialects import for_engine
from cdc_recon.reconcile.dialects.base import Column, TableShape

__all__ = ["Column", "TableShape", "read_shape"]


def read_shape(engine: sa.Engine, table: str, *, side: str) -> TableShape:
    """The shape of `table` in `engine`'s database; `ConfigError` when it does not exist."""
    return for_engine(engine).read_shape(engine, table, side=side)
