"""The `replay` command, registered on the `cdc-recon` app by `cdc_recon.cli.app`.

    $ cdc-recon -c cdc-recon.yml replay --from -2h [--to now] [--table public.customers]
          [--source kafka|source-db] [--dry-run] [--json]

Times are ISO-8601 (UTC when no zone is given), `now`, or relative: -90s, -30m, -2h, -1d,
-1w. Errors propagate to `cdc_recon.cli.app.main`, which turns them into exit codes.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from cdc_recon.cli.progress import progress_bar

if TYPE_CHECKING:
    from cdc_recon.replay import ReplaySummary

SUMMARY_ROWS = ("read", "applied", "superseded", "duplicates", "skipped", "failed")


class ReplaySource(enum.StrEnum):
    KAFKA = "kafka"
    SOURCE_DB = "source-db"


def replay(
    ctx: typer.Context,
    start: Annotated[
        str, typer.Option("--from", metavar="T", help="Window start: ISO-8601, now, or -2h.")
    ],
    end: Annotated[str, typer.Option("--to", metavar="T", help="Window end (exclusive).")] = "now",
    table: Annotated[
        list[str] | None,
        typer.Option("--table", "-t", help="Only this source table (repeatable)."),
    ] = None,
    source: Annotated[
        ReplaySource,
        typer.Option("--source", help="Read the CDC topics, or re-read rows from the source."),
    ] = ReplaySource.KAFKA,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be applied; write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Re-apply a time window idempotently: already applied changes are not applied again."""
    from cdc_recon.replay import replay_window
    from cdc_recon.timeparse import parse_window

    first, last = parse_window(start, end, datetime.now(UTC))
    settings = ctx.obj.settings()
    with progress_bar("replay: read", enabled=not as_json) as progress:
        summary = replay_window(
            settings,
            start=first,
            end=last,
            tables=table,
            source="kafka" if source is ReplaySource.KAFKA else "source-db",
            dry_run=dry_run,
            progress=progress,
        )
    if as_json:
        data = {"from": first.isoformat(), "to": last.isoformat(), **summary.as_dict()}
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        _print_summary(summary, first, last)


def _print_summary(summary: ReplaySummary, first: datetime, last: datetime) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = "replay (dry run: nothing written)" if summary.dry_run else "replay"
    console.print(f"[bold]{title}[/] of {first.isoformat()} .. {last.isoformat()}")
    shown = Table()
    shown.add_column("changes")
    shown.add_column("count", justify="right")
    values = summary.as_dict()
    for name in SUMMARY_ROWS:
        shown.add_row(name, str(values[name]))
    console.print(shown)
