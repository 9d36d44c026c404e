"""The sweeper's commands, registered on the `cdc-recon` app by `cdc_recon.cli.app`.

    $ cdc-recon -c cdc-recon.yml source install --table public.customers [--table ...]
    $ cdc-recon -c cdc-recon.yml source uninstall [--table ...] [--drop-log]
    $ cdc-recon -c cdc-recon.yml sweep --once [--from -2h --to -5m] [--json] [--no-replay]

Errors propagate to `cdc_recon.cli.app.main`, which turns them into exit codes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Annotated, Any

import typer

from cdc_recon.cli.progress import run_until_stopped

source_app = typer.Typer(
    help="The trigger change log in the source database (sweeper adapter pg_trigger, "
    "or mariadb_trigger for a mariadb:// source_url).",
    no_args_is_help=True,
)


def _change_log(settings: Any) -> Any:
    """The change log of the configured source: MariaDB for a mariadb:// URL."""
    from cdc_recon.mariadb.connection import is_mariadb_url

    url = settings.source_url.get_secret_value() if settings.source_url else ""
    if is_mariadb_url(url):
        from cdc_recon.sweep.adapters.mariadb_trigger import MariaDbTriggerLog

        return MariaDbTriggerLog(settings)
    from cdc_recon.sweep.adapters.pg_trigger import PgTriggerLog

    return PgTriggerLog(settings)


@source_app.command("install")
def source_install(
    ctx: typer.Context,
    table: Annotated[
        list[str], typer.Option("--table", "-t", help="schema.table to capture (repeatable).")
    ],
) -> None:
    """Create the change-log table and a trigger on each table (idempotent)."""
    log = _change_log(ctx.obj.settings())
    try:
        for done in log.install(table):
            typer.echo(f"installed {done.table} (key {', '.join(done.key)})")
    finally:
        log.close()


@source_app.command("uninstall")
def source_uninstall(
    ctx: typer.Context,
    table: Annotated[
        list[str] | None, typer.Option("--table", "-t", help="Only these tables (repeatable).")
    ] = None,
    drop_log: Annotated[
        bool, typer.Option("--drop-log", help="Drop the change-log table as well.")
    ] = False,
) -> None:
    """Remove the change-log triggers (of every captured table unless --table)."""
    settings = ctx.obj.settings()
    log = _change_log(settings)
    try:
        removed = log.uninstall(table or (), drop_log=drop_log)
    finally:
        log.close()
    for name in removed:
        typer.echo(f"removed trigger on {name}")
    if drop_log:
        typer.echo(f"dropped {settings.sweeper.changelog_schema}.changes")


def sweep(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One sweep, then exit.")] = False,
    start: Annotated[
        str | None,
        typer.Option("--from", help="Window start: ISO-8601 or relative (-2h). Implies --once."),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Window end (default: closed)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    replay: Annotated[
        bool, typer.Option("--replay/--no-replay", help="Replay what is missed.")
    ] = True,
) -> None:
    """Find the source changes that never reached the target, and replay them.

    Without --once, sweeps every `sweeper.interval` seconds until interrupted.
    """
    from cdc_recon.sweep.sweeper import sweep_once
    from cdc_recon.timeparse import parse_time

    settings = ctx.obj.settings()
    now = dt.datetime.now(dt.UTC)
    window_from = parse_time(start, now) if start else None
    window_to = parse_time(end, now) if end else None
    if not ctx.obj.debug:
        logging.getLogger("cdc_recon").setLevel(logging.INFO)
    if once or window_from is not None or window_to is not None:
        run = sweep_once(settings, window_from=window_from, window_to=window_to, replay=replay)
        _show(run.as_dict(), as_json)
        return
    from cdc_recon.sweep.sweeper import SweeperThread

    thread = SweeperThread(settings)
    run_until_stopped(thread)


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"sweep ({data['adapter']}): {data['status']}")
    table.add_column("")
    table.add_column(data["unit"], justify="right")
    table.add_row("window", f"{data['window_from'] or '-'} .. {data['window_to'] or '-'}")
    for name in ("applied", "superseded", "missed", "in_flight"):
        table.add_row(name.replace("_", " "), str(data[name]))
    for name in ("replayed", "replay_failed", "replay_pending"):
        table.add_row(name.replace("_", " "), str(data[name]))
    table.add_row("seconds", f"{data['seconds']:.2f}")
    console.print(table)
    if data.get("detail"):
        console.print(data["detail"])
    for change_id in data["missed_ids"][:20]:
        console.print(f"missed {change_id}")
    if len(data["missed_ids"]) > 20:
        console.print(f"... and {len(data['missed_ids']) - 20} more (table missed_changes)")
