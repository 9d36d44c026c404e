"""Reflects mapped target tables into `TargetShape`s, with clear errors for bad mappings."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from cdc_recon.apply.mapping import TargetShape
from cdc_recon.config import TableMapping
from cdc_recon.exceptions import ConfigError


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
    try:
        return TargetShape(
            table=mapping.target,
            columns=tuple(column["name"] for column in columns),
            key=key,
            json_columns=frozenset(c["name"] for c in columns if isinstance(c["type"], json_types)),
            array_columns=frozenset(c["name"] for c in columns if isinstance(c["type"], sa.ARRAY)),
        )
    except ValueError as exc:
        raise ConfigError(f"config: tables.{index}: {exc}", key=f"tables.{index}") from exc


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
