"""The retention's command, registered on the `cdc-recon` app by `cdc_recon.cli.app`.

    $ cdc-recon -c cdc-recon.yml prune --once [--dry-run] [--json]

Errors propagate to `cdc_recon.cli.app.main`, which turns them into exit codes.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import typer

from cdc_recon.cli.progress import run_until_stopped


def prune(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be pruned; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Prune the control tables by their retention settings (`retention:`, `key_state:`).

    Without --once, prunes every `retention.interval` seconds until interrupted. Only
    one instance prunes at a time: another one's round shows as skipped. --dry-run
    counts each table as it is now: rows that only become free once an earlier task
    deleted what refers to them (findings of a pruned correction) are not counted.
    """
    from cdc_recon.retention.pruner import PrunerThread, prune_once

    settings = ctx.obj.settings()
    if not ctx.obj.debug:
        logging.getLogger("cdc_recon").setLevel(logging.INFO)
    if once or dry_run:
        _show(prune_once(settings, dry_run=dry_run).as_dict(), as_json)
        return
    thread = PrunerThread(settings, first_after=0.0)
    run_until_stopped(thread)


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    verb = "would prune" if data["dry_run"] else "pruned"
    table = Table(title=f"prune: {data['status']}")
    for column in ("task", "status", verb, "older than", "detail"):
        table.add_column(column, justify="right" if column == verb else "left")
    for task in data["tasks"]:
        cutoff = task["cutoff"] or "-"
        table.add_row(task["task"], task["status"], str(task["rows"]), cutoff, task["detail"])
    console.print(table)
    console.print(f"{verb} {data['rows']} rows in {data['seconds']:.2f}s")


def show_prune_state(console: Any, rows: list[dict[str, Any]]) -> None:
    """The `retention` table of `cdc-recon status`."""
    from rich.table import Table

    table = Table(title="retention (last pruning round per task, UTC)")
    columns = ("task", "status", "last round", "rows", "last pruned", "pruned then", "total")
    for column in columns:
        table.add_column(column, justify="right" if column in ("rows", "total") else "left")
    for row in rows:
        values = (
            row["task"],
            row["status"],
            _moment(row["last_run_at"]),
            row["rows"],
            _moment(row["last_pruned_at"]),
            row["last_pruned_rows"],
            row["total_rows"],
        )
        table.add_row(*("-" if v is None else str(v) for v in values))
    if not rows:
        table.add_row("-", "never ran", "-", "-", "-", "-", "-")
    console.print(table)


def _moment(iso: str | None) -> str | None:
    """`2026-12-04T19:06:31.435580+00:00` as `2026-12-04 19:06:31` (times are UTC)."""
    return iso[:19].replace("T", " ") if iso else None
