"""What the target's control tables say, for `cdc-recon status` and the service's start.

>>> target = read_target_status(engine, "cdc_recon", "cdc-recon")  # doctest: +SKIP
>>> target.offsets[("orders", 0)]                                  # doctest: +SKIP
1042
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa

from cdc_recon.apply.control_tables import CONTROL_TABLES, UPGRADES
from cdc_recon.apply.ledger import LedgerOverview, ledger_overview
from cdc_recon.apply.ledger_convert import ledger_kind
from cdc_recon.batch import TopicPartitionKey
from cdc_recon.config import Settings
from cdc_recon.exceptions import ConfigError
from cdc_recon.pg.errors import guard as _guard
from cdc_recon.pg.sql import quote_ident


@dataclass(frozen=True)
class TargetStatus:
    """The stored offsets of one group, the ledger by outcome, failures by reason and
    status, and by the state of their dead letters."""

    offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)
    ledger: dict[str, int] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)  # (reason, status)
    dead_letters: dict[str, int] = field(default_factory=dict)  # failures by dead_letter
    partitions: LedgerOverview = LedgerOverview()  # the ledger's, and the next drop


def present_tables(engine: sa.Engine, schema: str) -> set[str]:
    """`schema.table` of every table in `schema` (empty when the schema does not exist)."""
    names = _guard(lambda: sa.inspect(engine).get_table_names(schema=schema))
    return {f"{schema}.{name}" for name in names}


def missing_control_tables(engine: sa.Engine, schema: str) -> list[str]:
    """The control tables `cdc-recon init` would create that are not there."""
    present = set(_guard(lambda: sa.inspect(engine).get_table_names(schema=schema)))
    return [f"{schema}.{table}" for table in CONTROL_TABLES if table not in present]


def outdated_control_tables(engine: sa.Engine, schema: str) -> list[str]:
    """The columns and indexes an earlier version's control tables lack (`UPGRADES`)."""
    sql = sa.text(
        "SELECT c.relname, a.attname FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND a.attnum > 0 AND NOT a.attisdropped "
        "AND a.attgenerated = '' "  # a generated column is not the plain one `UPGRADES` wants
        "UNION ALL SELECT tablename, indexname FROM pg_indexes WHERE schemaname = :schema"
    )

    def read() -> set[tuple[str, str]]:
        with engine.connect() as conn:
            return {(table, name) for table, name in conn.execute(sql, {"schema": schema})}

    def kind() -> str | None:
        with engine.connect() as conn:
            return ledger_kind(conn, schema)

    present = _guard(read)
    outdated = [
        f"{schema}.{table} {kind} {name}"
        for table, name, kind in UPGRADES
        if (table, name) not in present
    ]
    if _guard(kind) == "r":
        outdated.append(f"{schema}.ledger partitions by source time")
    return outdated


def require_control_tables(engine: sa.Engine, schema: str) -> None:
    """`ConfigError` telling the operator to run `cdc-recon init` when tables are missing,
    or were created by an earlier version and lack what this one writes."""
    missing = missing_control_tables(engine, schema)
    if missing:
        raise ConfigError(
            f"control tables missing in the target ({', '.join(missing)}): run `cdc-recon init`",
            key="control_schema",
        )
    outdated = outdated_control_tables(engine, schema)
    if outdated:
        raise ConfigError(
            "control tables in the target predate this version of cdc-recon (missing "
            f"{', '.join(outdated)}): run `cdc-recon init` to upgrade them",
            key="control_schema",
        )


def read_target_status(
    engine: sa.Engine, schema: str, group_id: str, settings: Settings | None = None
) -> TargetStatus:
    """One read-only transaction over the control tables; with `settings`, the ledger's
    partitions and its next drop too."""
    s = quote_ident(schema)
    offsets_sql = sa.text(
        f"SELECT topic, kafka_partition, next_offset FROM {s}.offsets WHERE group_id = :group"
    )
    ledger_sql = sa.text(f"SELECT outcome, count(*) FROM {s}.ledger GROUP BY outcome")
    failures_sql = sa.text(
        f"SELECT reason, status, count(*) FROM {s}.failures GROUP BY reason, status"
    )
    dead_letters_sql = sa.text(
        f"SELECT dead_letter, count(*) FROM {s}.failures GROUP BY dead_letter"
    )

    def read() -> TargetStatus:
        with engine.connect() as conn:
            offsets = conn.execute(offsets_sql, {"group": group_id}).all()
            ledger = conn.execute(ledger_sql).all()
            failures = conn.execute(failures_sql).all()
            dead_letters = conn.execute(dead_letters_sql).all()
            now = dt.datetime.now(dt.UTC)
            partitions = ledger_overview(conn, settings, now) if settings else LedgerOverview()
        return TargetStatus(
            offsets={(topic, part): offset for topic, part, offset in offsets},
            ledger={outcome: count for outcome, count in ledger},
            failures={(reason, status): count for reason, status, count in failures},
            dead_letters={state: count for state, count in dead_letters},
            partitions=partitions,
        )

    return _guard(read)
