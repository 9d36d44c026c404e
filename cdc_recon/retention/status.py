"""What the pruner did last, per task, from `prune_state`: for `cdc-recon status`.

>>> read_prune_state(engine, "cdc_recon")[0]["task"]   # doctest: +SKIP
'failures'
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from cdc_recon.pg.errors import guard
from cdc_recon.pg.sql import quote_ident
from cdc_recon.retention import queries

STATE_COLUMNS = (
    "task",
    "last_run_at",
    "status",
    "rows",
    "cutoff",
    "detail",
    "last_pruned_at",
    "last_pruned_rows",
    "total_rows",
)


def read_prune_state(engine: sa.Engine, schema: str) -> list[dict[str, Any]]:
    """One dict per task (times as ISO-8601 text); empty before the first round."""
    exists = sa.text("SELECT to_regclass(:table) IS NOT NULL")

    def read() -> list[dict[str, Any]]:
        with engine.connect() as conn:
            table = f"{quote_ident(schema)}.prune_state"
            if not conn.execute(exists, {"table": table}).scalar():
                return []
            rows = conn.exec_driver_sql(queries.read_state(schema)).all()
        return [dict(zip(STATE_COLUMNS, map(_plain, row), strict=True)) for row in rows]

    return guard(read)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value
