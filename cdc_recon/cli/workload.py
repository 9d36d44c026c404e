"""The `workload` commands, registered on the `cdc-recon` app by `cdc_recon.cli.app`.

    $ cdc-recon workload schema --schema shop [--source-url URL]
    $ cdc-recon workload run --schema shop --rate 200 --duration 60 \\
          --mix insert=0.5,update=0.4,delete=0.1 --seed 7 [--count N] [--json]
    $ cdc-recon workload mapping --schema shop --target-schema copy --topic-prefix demo
    $ cdc-recon workload mapping --schema shop --include-list
    $ cdc-recon workload schema --source-url "$CDC_RECON_MARIADB_URL"      # a MariaDB source
    $ cdc-recon workload schema --source-url "$CDC_RECON_TARGET_URL" --types mysql --schema shop
    $ cdc-recon workload run --source-url "$CDC_RECON_MARIADB_URL" --rate 200 --duration 60
    $ cdc-recon workload mapping --types mysql --schema source --target-schema shop \
          --topic-prefix mdb

The source database is `--source-url`, else the configuration's `source_url`
(`CDC_RECON_SOURCE_URL`). `schema --source-url $CDC_RECON_TARGET_URL` makes the same
tables in the target. A `mariadb://` URL runs the MySQL-typed shop of
`cdc_recon.workload.mariadb` in that URL's database (`--schema` is the database there);
`--types mysql` makes or maps the PostgreSQL target tables of that shop. `mapping`
prints the `topics:` and `tables:` of a cdc-recon config
for a Debezium connector capturing the schema (`table.include.list` in a comment, or
alone with `--include-list`).
Errors propagate to `cdc_recon.cli.app.main`, which turns them into exit codes.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from cdc_recon.exceptions import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from cdc_recon.mariadb.connection import MariaDbUrl
    from cdc_recon.workload import Summary

workload_app = typer.Typer(
    help="A realistic source workload (customers, accounts, orders, order items, transactions).",
    no_args_is_help=True,
)

SourceUrl = Annotated[
    str | None,
    typer.Option("--source-url", "--url", help="Database URL (default: config source_url)."),
]
Schema = Annotated[str, typer.Option("--schema", help="Schema of the workload tables.")]
Types = Annotated[
    str | None,
    typer.Option(
        "--types",
        help="postgres or mysql: which shop (default: mysql for a mariadb:// URL, else postgres).",
    ),
]


def _is_mariadb(ctx: typer.Context, url: str | None) -> bool:
    from cdc_recon.mariadb.connection import is_mariadb_url

    chosen = url or ctx.obj.settings().source_url
    return chosen is not None and is_mariadb_url(chosen)


def _types(value: str | None, mariadb: bool) -> str:
    chosen = value or ("mysql" if mariadb else "postgres")
    if chosen not in ("postgres", "mysql"):
        raise ConfigError(f"--types: postgres or mysql, not {chosen!r}")
    return chosen


def _mariadb_url(ctx: typer.Context, url: str | None) -> MariaDbUrl:
    from cdc_recon.mariadb.connection import parse_url

    chosen = url or ctx.obj.settings().source_url
    assert chosen is not None
    return parse_url(chosen)


def _engine(ctx: typer.Context, url: str | None) -> sa.Engine:
    from cdc_recon.pg.engine import check_connection, create_engine

    chosen = url or ctx.obj.settings().source_url
    if chosen is None:
        raise ConfigError("config: source_url: give --source-url or CDC_RECON_SOURCE_URL")
    engine = create_engine(chosen, name="source")
    check_connection(engine, name="source")
    return engine


@workload_app.command("schema")
def schema_command(
    ctx: typer.Context,
    source_url: SourceUrl = None,
    schema: Schema = "public",
    types: Types = None,
) -> None:
    """Create the workload's schema and tables (idempotent)."""
    from cdc_recon.workload import create_tables
    from cdc_recon.workload import mariadb as shop

    if _is_mariadb(ctx, source_url):
        url = _mariadb_url(ctx, source_url)
        for table in shop.create_mariadb_tables(url):
            typer.echo(f"table {table}")
        return
    engine = _engine(ctx, source_url)
    try:
        if _types(types, False) == "mysql":
            names = shop.create_target_tables(engine, schema)
        else:
            names = create_tables(engine, schema)
        for table in names:
            typer.echo(f"table {table}")
    finally:
        engine.dispose()


@workload_app.command("run")
def run_command(
    ctx: typer.Context,
    source_url: SourceUrl = None,
    schema: Schema = "public",
    rate: Annotated[
        float, typer.Option("--rate", min=0, help="Row changes per second (0: unthrottled).")
    ] = 100.0,
    duration: Annotated[
        float | None, typer.Option("--duration", min=0, help="Seconds to run.")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Row changes to make.")
    ] = None,
    mix: Annotated[
        str, typer.Option("--mix", help="Shares of insert/update/delete.")
    ] = "insert=0.5,update=0.4,delete=0.1",
    seed: Annotated[int, typer.Option("--seed", help="Same seed + same rows = same run.")] = 1,
    tx_size: Annotated[
        int, typer.Option("--tx-size", min=1, help="Most row changes per transaction.")
    ] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Insert, update and delete rows in small transactions at a steady rate.

    Runs --duration seconds (60 when neither --duration nor --count is given) or until
    --count changes, whichever comes first; progress every 5 s on stderr.
    """
    from cdc_recon.workload import Mix, WorkloadConfig, run_workload
    from cdc_recon.workload.mariadb import run_mariadb_workload

    config = WorkloadConfig(
        schema=schema,
        rate=rate,
        duration=duration if duration is not None or count is not None else 60.0,
        count=count,
        mix=Mix.parse(mix),
        seed=seed,
        max_tx_size=tx_size,
    )
    if _is_mariadb(ctx, source_url):
        url = _mariadb_url(ctx, source_url)
        summary = run_mariadb_workload(url, config, on_progress=_progress)
        schema = url.database
    else:
        engine = _engine(ctx, source_url)
        try:
            summary = run_workload(engine, config, on_progress=_progress)
        finally:
            engine.dispose()
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), indent=2, sort_keys=True))
        return
    typer.echo(f"workload done: {summary.line()}")
    for table, kinds in summary.as_dict()["by_table"].items():
        typer.echo(f"  {schema}.{table}: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))


def _progress(summary: Summary) -> None:
    print(f"workload: {summary.line()}", file=sys.stderr, flush=True)


@workload_app.command("mapping")
def mapping_command(
    schema: Schema = "public",
    target_schema: Annotated[
        str, typer.Option("--target-schema", help="Schema of the target tables.")
    ] = "public",
    topic_prefix: Annotated[
        str, typer.Option("--topic-prefix", help="The connector's topic.prefix.")
    ] = "demo",
    only_include_list: Annotated[
        bool,
        typer.Option("--include-list", help="Print only the connector's table.include.list."),
    ] = False,
    types: Types = None,
) -> None:
    """Print the `topics:` and `tables:` config for Debezium topics of the workload tables
    (`--types mysql`: of the MariaDB shop, `--schema` naming its database)."""
    from cdc_recon.workload import include_list, table_mappings, topic_names
    from cdc_recon.workload.mariadb import mariadb_mappings

    if only_include_list:
        typer.echo(include_list(schema))
        return
    typer.echo(f"# table.include.list={include_list(schema)}")
    mysql = _types(types, False) == "mysql"
    config = {
        "topics": topic_names(topic_prefix, schema),
        "tables": (mariadb_mappings if mysql else table_mappings)(schema, target_schema),
    }
    typer.echo(yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip())
