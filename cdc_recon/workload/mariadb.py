"""The shop workload on a MariaDB source: MySQL types, the same plan, a PostgreSQL target.

The five tables of `cdc_recon.workload.tables` with the MySQL types a migration meets,
plus columns that exist only to carry them (`extras`). Each column names its MariaDB type
and the PostgreSQL type of its target column:

    MariaDB                        PostgreSQL     how the Debezium MariaDB connector sends it
    BIGINT UNSIGNED (to 2^64-1)    numeric(20,0)  Decimal (bigint.unsigned.handling.mode=precise)
    TINYINT(1)                     boolean        boolean (TinyIntOneToBooleanConverter)
    BIT(1)                         boolean        boolean
    DATETIME(6)                    timestamptz    MicroTimestamp: the wall time, no zone; read
                                                  in the table's `datetime_zone` (default UTC)
    TIMESTAMP(6)                   timestamptz    ZonedTimestamp in UTC (1970-2038 only)
    DECIMAL(18,2)                  numeric(18,2)  Decimal
    JSON (LONGTEXT + CHECK)        jsonb          the JSON text
    ENUM / SET                     text           the label / the labels joined by commas (*)
    VARCHAR, TEXT, utf8mb4         text           text, emoji included (four-byte UTF-8)
    BLOB                           bytea          bytes
    DATE, zero date allowed        date           Date; a zero date '0000-00-00' as NULL
    CHAR(36) (a uuid)              uuid           text

(*) Not an ENUM label with a four-byte character (an emoji): MariaDB keeps a table's
definition in utf8mb3, so SHOW CREATE TABLE and information_schema show such a label as
'?', and the connector, which reads the labels from there, streams '? label' for it
(values read by SELECT, as in its snapshot, are right). Labels here stay in the BMP
('platinum ★'); emoji live in the text columns.

A zero date is what MariaDB stores when a DATE column is given '0000-00-00' outside
NO_ZERO_DATE mode; it is no day, and the connector streams it as NULL (it cannot say
otherwise in a nullable column), so the target holds NULL: `scripts/demo.d/compare.py`
and the e2e comparison normalise it the same way.

The runner writes through `cdc_recon.mariadb` (values as parameters, backtick-quoted
identifiers), the planner is the PostgreSQL workload's, so one seed makes the same
changes on both engines.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from cdc_recon.exceptions import DatabaseUnavailable, UsageError, WorkloadError
from cdc_recon.mariadb.connection import MariaDbUrl, connect
from cdc_recon.mariadb.errors import DriverError, code, is_unavailable, message
from cdc_recon.mariadb.sql import quote_ident
from cdc_recon.workload import values as v
from cdc_recon.workload.planner import Planner, StartState, Statement
from cdc_recon.workload.runner import Summary, WorkloadConfig, _Pacer
from cdc_recon.workload.tables import BY_NAME, TABLES, quote

MAX_UNSIGNED = 2**64 - 1
TIMESTAMP_FIRST = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)  # MariaDB TIMESTAMP's range
TIMESTAMP_LAST = dt.datetime(2038, 1, 1, tzinfo=dt.UTC)
NO_SUCH_TABLE = 1146

# (column, MariaDB type, PostgreSQL type) per table, in column order.
Column = tuple[str, str, str]
COLUMNS: dict[str, tuple[Column, ...]] = {
    "customers": (
        ("id", "BIGINT UNSIGNED NOT NULL", "numeric(20,0) NOT NULL"),
        ("name", "VARCHAR(200) NOT NULL", "text NOT NULL"),
        ("email", "VARCHAR(320)", "text"),
        ("country", "CHAR(2)", "char(2)"),
        ("bio", "MEDIUMTEXT", "text"),
        ("attributes", "JSON", "jsonb"),
        ("created_at", "DATETIME(6) NOT NULL", "timestamptz NOT NULL"),
        ("updated_at", "TIMESTAMP(6) NULL DEFAULT NULL", "timestamptz"),
        ("vip", "TINYINT(1) NOT NULL DEFAULT 0", "boolean NOT NULL"),
        ("verified", "BIT(1)", "boolean"),
        ("tier", "ENUM('bronze','silver','gold','platinum ★')", "text"),
        ("tags", "SET('new','vip','blocked','émigré')", "text"),
        ("loyalty_points", "BIGINT UNSIGNED", "numeric(20,0)"),
        ("avatar", "BLOB", "bytea"),
        ("birthday", "DATE", "date"),
    ),
    "accounts": (
        ("id", "BIGINT NOT NULL", "bigint NOT NULL"),
        ("customer_id", "BIGINT UNSIGNED NOT NULL", "numeric(20,0) NOT NULL"),
        ("iban", "VARCHAR(34) NOT NULL", "text NOT NULL"),
        ("currency", "CHAR(3) NOT NULL", "char(3) NOT NULL"),
        ("balance", "DECIMAL(18,2) NOT NULL", "numeric(18,2) NOT NULL"),
        ("status", "ENUM('open','frozen','closing','closed') NOT NULL", "text NOT NULL"),
        ("opened_at", "DATETIME(6) NOT NULL", "timestamptz NOT NULL"),
        ("updated_at", "TIMESTAMP(6) NULL DEFAULT NULL", "timestamptz"),
    ),
    "orders": (
        ("id", "BIGINT NOT NULL", "bigint NOT NULL"),
        ("customer_id", "BIGINT UNSIGNED NOT NULL", "numeric(20,0) NOT NULL"),
        ("status", "VARCHAR(20) NOT NULL", "text NOT NULL"),
        ("total", "DECIMAL(18,2) NOT NULL", "numeric(18,2) NOT NULL"),
        ("currency", "CHAR(3) NOT NULL", "char(3) NOT NULL"),
        ("placed_at", "DATETIME(6) NOT NULL", "timestamptz NOT NULL"),
        ("shipping", "JSON", "jsonb"),
        ("note", "TEXT", "text"),
    ),
    "order_items": (
        ("order_id", "BIGINT NOT NULL", "bigint NOT NULL"),
        ("line_no", "INT NOT NULL", "integer NOT NULL"),
        ("sku", "VARCHAR(40) NOT NULL", "text NOT NULL"),
        ("description", "TEXT", "text"),
        ("quantity", "INT NOT NULL", "integer NOT NULL"),
        ("unit_price", "DECIMAL(18,2) NOT NULL", "numeric(18,2) NOT NULL"),
    ),
    "transactions": (
        ("id", "CHAR(36) NOT NULL", "uuid NOT NULL"),
        ("account_id", "BIGINT NOT NULL", "bigint NOT NULL"),
        ("amount", "DECIMAL(18,2) NOT NULL", "numeric(18,2) NOT NULL"),
        ("kind", "VARCHAR(20) NOT NULL", "text NOT NULL"),
        ("booked_at", "DATETIME(6) NOT NULL", "timestamptz NOT NULL"),
        ("memo", "TEXT", "text"),
        ("metadata", "JSON", "jsonb"),
    ),
}
TIMESTAMP_COLUMNS = frozenset(
    (table, name)
    for table, columns in COLUMNS.items()
    for name, kind, _ in columns
    if "TIMESTAMP" in kind
)


def mariadb_ddl(database: str) -> list[str]:
    """CREATE TABLE IF NOT EXISTS of the five tables in `database` (utf8mb4)."""
    statements = []
    for table in TABLES:
        columns = [f"{quote_ident(name)} {kind}" for name, kind, _ in COLUMNS[table.name]]
        columns.append(f"PRIMARY KEY ({', '.join(quote_ident(k) for k in table.key)})")
        body = ",\n    ".join(columns)
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {quote_ident(database)}.{quote_ident(table.name)} "
            f"(\n    {body}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
        )
    return statements


def target_ddl(schema: str) -> list[str]:
    """The PostgreSQL target tables of a MariaDB source (types of the module docstring)."""
    statements = [f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}"]
    for table in TABLES:
        columns = [f"{quote(name)} {kind}" for name, _, kind in COLUMNS[table.name]]
        columns.append(f"PRIMARY KEY ({', '.join(quote(k) for k in table.key)})")
        body = ",\n    ".join(columns)
        statements.append(f"CREATE TABLE IF NOT EXISTS {table.qualified(schema)} (\n    {body})")
    return statements


def create_mariadb_tables(url: MariaDbUrl) -> list[str]:
    """The URL's database and the five tables in it, if absent; returns `db.table` names."""
    # information_schema always exists: the connection to create the database from
    server = dataclasses.replace(url, database="information_schema")
    with connect(server) as conn, conn.cursor() as cur:
        try:
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS {quote_ident(url.database)} "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
            )
            for statement in mariadb_ddl(url.database):
                cur.execute(statement)
            conn.commit()
        except DriverError as exc:
            raise _ours(exc) from exc
    return [f"{url.database}.{table.name}" for table in TABLES]


def mariadb_mappings(database: str, target_schema: str) -> list[dict[str, Any]]:
    """The `tables:` of a cdc-recon config for the MariaDB connector's topics."""
    return [
        {
            "source": f"{database}.{table.name}",
            "target": f"{target_schema}.{table.name}",
            "key": list(table.key),
            "connector": "mysql",
        }
        for table in TABLES
    ]


# -- the values ------------------------------------------------------------------------


def extras(rng: random.Random, table: str, kind: str) -> dict[str, Any]:
    """Values of the columns only the MariaDB shop has (customers'), for one statement."""
    if table != "customers" or kind == "delete":
        return {}
    points = rng.choice([0, 1, 2**32, 2**63, MAX_UNSIGNED, rng.randrange(10**6)])
    found: dict[str, Any] = {
        "vip": rng.random() < 0.2,
        "verified": v.maybe(rng, rng.random() < 0.5),
        "tier": v.maybe(rng, rng.choice(["bronze", "silver", "gold", "platinum ★"])),
        "tags": ",".join(t for t in ("new", "vip", "blocked", "émigré") if rng.random() < 0.4),
        "loyalty_points": v.maybe(rng, points),
    }
    if kind == "insert":
        found["avatar"] = v.maybe(rng, rng.randbytes(rng.randint(0, 64)), 0.3)
        day = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(30_000))
        found["birthday"] = rng.choice([None, "0000-00-00", day, day])
    return found


def mariadb_value(table: str, column: str, value: Any) -> Any:
    """A planner value as MariaDB takes it: JSON as text, instants as naive UTC wall time
    (TIMESTAMP columns kept inside their 1970-2038 range), uuids as text."""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, dt.datetime):
        if (table, column) in TIMESTAMP_COLUMNS:
            value = min(max(value, TIMESTAMP_FIRST), TIMESTAMP_LAST)
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def statement_sql(database: str, statement: Statement, columns: tuple[str, ...]) -> str:
    target = f"{quote_ident(database)}.{quote_ident(statement.table)}"
    key = BY_NAME[statement.table].key
    where = " AND ".join(f"{quote_ident(k)} = %(k_{k})s" for k in key)
    if statement.kind == "insert":
        names = ", ".join(quote_ident(c) for c in columns)
        params = ", ".join(f"%(v_{c})s" for c in columns)
        return f"INSERT INTO {target} ({names}) VALUES ({params})"
    if statement.kind == "update":
        sets = ", ".join(f"{quote_ident(c)} = %(v_{c})s" for c in columns)
        return f"UPDATE {target} SET {sets} WHERE {where}"
    return f"DELETE FROM {target} WHERE {where}"


# -- the runner --------------------------------------------------------------------------


@dataclass
class MariaDbSession:
    """One connection of the workload: reads the start state, runs transactions."""

    conn: Any
    database: str
    rng: random.Random

    def start_state(self) -> StartState:
        keys: dict[str, tuple[tuple[Any, ...], ...]] = {}
        with self.conn.cursor() as cur:
            for table in TABLES:
                columns = ", ".join(quote_ident(k) for k in table.key)
                name = f"{quote_ident(self.database)}.{quote_ident(table.name)}"
                cur.execute(f"SELECT {columns} FROM {name} ORDER BY {columns}")
                keys[table.name] = tuple(tuple(row) for row in cur.fetchall())
        self.conn.commit()
        return StartState(keys)

    def execute(self, statements: list[Statement]) -> None:
        with self.conn.cursor() as cur:
            for statement in statements:
                values = {**statement.values, **extras(self.rng, statement.table, statement.kind)}
                params = {f"k_{k}": value for k, value in statement.key.items()}
                params.update(
                    {f"v_{c}": mariadb_value(statement.table, c, x) for c, x in values.items()}
                )
                cur.execute(statement_sql(self.database, statement, tuple(values)), params)
                if cur.rowcount != 1:
                    raise WorkloadError(
                        f"{statement.kind} of {statement.table} {dict(statement.key)} changed "
                        f"{cur.rowcount} rows: is another writer changing {self.database}?"
                    )
        self.conn.commit()


def run_mariadb_workload(
    url: MariaDbUrl,
    config: WorkloadConfig,
    *,
    on_progress: Callable[[Summary], None] | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Summary:
    """`run_workload` for a MariaDB source: the same plan for a seed, MySQL types."""
    stop = stop or threading.Event()
    summary = Summary()
    with connect(url, name="source") as conn:
        try:
            session = MariaDbSession(conn, url.database, random.Random(config.seed + 1))
            planner = Planner(session.start_state(), config.mix, config.seed)
            pacer = _Pacer(config, clock)
            shown = pacer.started
            while not stop.is_set() and (left := pacer.remaining(summary.total)) is not None:
                size = min(left, planner.rng.randint(1, config.max_tx_size))
                statements = planner.transaction(size)
                session.execute(statements)
                summary.transactions += 1
                summary.changes.update((s.table, s.kind) for s in statements)
                summary.seconds = clock() - pacer.started
                if on_progress is not None and clock() - shown >= config.progress_every:
                    shown = clock()
                    on_progress(summary)
                if (delay := pacer.delay(summary.total)) > 0:
                    stop.wait(delay)
        except DriverError as exc:
            raise _ours(exc) from exc
    summary.seconds = clock() - pacer.started
    return summary


def _ours(exc: BaseException) -> Exception:
    if code(exc) == NO_SUCH_TABLE:
        return UsageError(
            f"source database: {message(exc)}; run `cdc-recon workload schema --source-url "
            "mariadb://...` first"
        )
    if is_unavailable(exc):
        return DatabaseUnavailable(f"source database: {message(exc)}", service="source")
    return WorkloadError(f"source database: {message(exc)}")


def create_target_tables(engine: Any, schema: str) -> list[str]:
    """The PostgreSQL target tables of the MariaDB shop in `schema` (idempotent)."""
    import sqlalchemy as sa

    with engine.begin() as conn:
        for statement in target_ddl(schema):
            conn.execute(sa.text(statement))
    return [f"{schema}.{table.name}" for table in TABLES]
