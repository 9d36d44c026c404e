"""Reflects mapped target tables into `TargetShape`s, with clear errors for bad mappings."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from cdc_recon.apply.mapping import TargetShape
from cdc_recon.config import TableMapping
from cdc_recon.exceptions import ConfigError
from cdc_recon.pg.sql import quote_table


def reflect_target(engine: sa.Engine, mapping: TableMapping, index: int) -> TargetShape:
    """The target table of `mapping` as it exists; `ConfigError` names the setting."""
    schema, _, name = mapping.target.rpartition(".")
    inspector = sa.inspect(engine)
    if not inspector.has_table(name, schema=schema or None):
        raise ConfigError(
            f"config: tables.{index}.target: table {mapping.target} does not exist in the target",
            key=f"tables.{index}.target",
        )
    columns = [
        column
        for column in inspector.get_columns(name, schema=schema or None)
        if not column.get("computed") and not _identity_always(column)
    ]
    key = tuple(mapping.rename.get(column, column) for column in mapping.key)
    if not _has_unique(inspector, name, schema or None, key):
        raise ConfigError(
            f"config: tables.{index}.key: {mapping.target} has no primary key or unique "
            f"constraint on {list(key)}",
            key=f"tables.{index}.key",
        )
    json_types = (postgresql.JSON, postgresql.JSONB, sa.JSON)
    names = tuple(column["name"] for column in columns)
    try:
        return TargetShape(
            table=mapping.target,
            columns=names,
            key=key,
            types=_column_types(engine, mapping.target, names),
            json_columns=frozenset(c["name"] for c in columns if isinstance(c["type"], json_types)),
            array_columns=frozenset(c["name"] for c in columns if isinstance(c["type"], sa.ARRAY)),
        )
    except ValueError as exc:
        raise ConfigError(f"config: tables.{index}: {exc}", key=f"tables.{index}") from exc


def _column_types(engine: sa.Engine, table: str, columns: tuple[str, ...]) -> tuple[str, ...]:
    """Each column's type as PostgreSQL writes it (`format_type`: `numeric(12,2)`)."""
    query = sa.text(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(:table) AND attnum > 0 AND NOT attisdropped"
    )
    with engine.connect() as conn:
        types: dict[str, str] = dict(conn.execute(query, {"table": quote_table(table)}).all())
    return tuple(types[column] for column in columns)


def _identity_always(column: object) -> bool:
    identity = column.get("identity") if isinstance(column, dict) else None
    return bool(identity and identity.get("always"))


def _has_unique(
    inspector: sa.Inspector, name: str, schema: str | None, key: tuple[str, ...]
) -> bool:
    wanted = set(key)
    pk = inspector.get_pk_constraint(name, schema=schema)
    if set(pk.get("constrained_columns") or ()) == wanted:
        return True
    for constraint in inspector.get_unique_constraints(name, schema=schema):
        if set(constraint["column_names"]) == wanted:
            return True
    for index in inspector.get_indexes(name, schema=schema):
        if index.get("unique") and set(index["column_names"]) == wanted:
            return True
    return False
