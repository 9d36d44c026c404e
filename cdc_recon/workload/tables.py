"""The workload's source schema: five tables a payments/e-commerce system would have.

    customers     bigint key; unicode names; `bio` a large text (8-20 KB) stored out of
                  line in TOAST and rarely updated, so most updates leave it unchanged and
                  Debezium sends its unchanged-TOAST placeholder instead (REPLICA IDENTITY
                  stays DEFAULT); jsonb attributes; timestamptz
    accounts      bigint key; numeric(18,2) balance; char(3) currency
    orders        bigint key; numeric(18,2) total; jsonb shipping address; unicode note
    order_items   composite key (order_id, line_no)
    transactions  uuid key; numeric(18,2) amount (negative, zero, extreme); jsonb metadata

No foreign keys: a CDC target applies each table's stream on its own, in no global
order, so the target could not enforce them either; the ids still refer to each other.

The same DDL makes the target tables (`create_tables` on the target engine), and
`table_mappings`/`topic_names` give the `tables:`/`topics:` of a cdc-recon config for a
Debezium connector capturing them.

    >>> [t.name for t in TABLES]
    ['customers', 'accounts', 'orders', 'order_items', 'transactions']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class Table:
    """One workload table: its name, key columns and column definitions."""

    name: str
    key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (name, SQL type and constraints)

    def __post_init__(self) -> None:
        names = [name for name, _ in self.columns]
        if not set(self.key) <= set(names):
            raise ValueError(f"{self.name}: key {self.key} not among its columns")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def ddl(self, schema: str) -> str:
        columns = [f"{quote(name)} {kind}" for name, kind in self.columns]
        columns.append(f"PRIMARY KEY ({', '.join(quote(k) for k in self.key)})")
        body = ",\n    ".join(columns)
        return f"CREATE TABLE IF NOT EXISTS {self.qualified(schema)} (\n    {body})"

    def qualified(self, schema: str) -> str:
        return f"{quote(schema)}.{quote(self.name)}"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


CUSTOMERS = Table(
    "customers",
    ("id",),
    (
        ("id", "bigint NOT NULL"),
        ("name", "text NOT NULL"),
        ("email", "text"),
        ("country", "char(2)"),
        ("bio", "text"),
        ("attributes", "jsonb"),
        ("created_at", "timestamptz NOT NULL"),
        ("updated_at", "timestamptz"),
    ),
)
ACCOUNTS = Table(
    "accounts",
    ("id",),
    (
        ("id", "bigint NOT NULL"),
        ("customer_id", "bigint NOT NULL"),
        ("iban", "text NOT NULL"),
        ("currency", "char(3) NOT NULL"),
        ("balance", "numeric(18,2) NOT NULL"),
        ("status", "text NOT NULL"),
        ("opened_at", "timestamptz NOT NULL"),
        ("updated_at", "timestamptz"),
    ),
)
ORDERS = Table(
    "orders",
    ("id",),
    (
        ("id", "bigint NOT NULL"),
        ("customer_id", "bigint NOT NULL"),
        ("status", "text NOT NULL"),
        ("total", "numeric(18,2) NOT NULL"),
        ("currency", "char(3) NOT NULL"),
        ("placed_at", "timestamptz NOT NULL"),
        ("shipping", "jsonb"),
        ("note", "text"),
    ),
)
ORDER_ITEMS = Table(
    "order_items",
    ("order_id", "line_no"),
    (
        ("order_id", "bigint NOT NULL"),
        ("line_no", "integer NOT NULL"),
        ("sku", "text NOT NULL"),
        ("description", "text"),
        ("quantity", "integer NOT NULL"),
        ("unit_price", "numeric(18,2) NOT NULL"),
    ),
)
TRANSACTIONS = Table(
    "transactions",
    ("id",),
    (
        ("id", "uuid NOT NULL"),
        ("account_id", "bigint NOT NULL"),
        ("amount", "numeric(18,2) NOT NULL"),
        ("kind", "text NOT NULL"),
        ("booked_at", "timestamptz NOT NULL"),
        ("memo", "text"),
        ("metadata", "jsonb"),
    ),
)

TABLES = (CUSTOMERS, ACCOUNTS, ORDERS, ORDER_ITEMS, TRANSACTIONS)
BY_NAME = {table.name: table for table in TABLES}


def create_tables(engine: sa.Engine, schema: str) -> list[str]:
    """Create the schema and the five tables if absent (idempotent); returns their names.

    `customers.bio` gets STORAGE EXTERNAL: stored out of line without compression, so a
    bio is always TOASTed, whatever text it holds.
    """
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}"))
        for table in TABLES:
            conn.execute(sa.text(table.ddl(schema)))
        bio = f"ALTER TABLE {CUSTOMERS.qualified(schema)} ALTER COLUMN bio SET STORAGE EXTERNAL"
        conn.execute(sa.text(bio))
    return [f"{schema}.{table.name}" for table in TABLES]


def table_mappings(source_schema: str, target_schema: str) -> list[dict[str, Any]]:
    """The `tables:` entries of a cdc-recon config mapping each table to the target."""
    return [
        {
            "source": f"{source_schema}.{table.name}",
            "target": f"{target_schema}.{table.name}",
            "key": list(table.key),
        }
        for table in TABLES
    ]


def topic_names(topic_prefix: str, source_schema: str) -> list[str]:
    """Debezium's topic of each table: `<topic.prefix>.<schema>.<table>`."""
    return [f"{topic_prefix}.{source_schema}.{table.name}" for table in TABLES]


def include_list(source_schema: str) -> str:
    """The connector's `table.include.list` for the five tables."""
    return ",".join(f"{source_schema}.{table.name}" for table in TABLES)
