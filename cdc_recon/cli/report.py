"""The `report` command, registered on the `cdc-recon` app by `cdc_recon.cli.app`.

    $ cdc-recon -c cdc-recon.yml report --date 2025-03-01 [--json]
    $ cdc-recon -c cdc-recon.yml report --trend 7d [--json]

A daily report per source table (applied, superseded, failures, missed, replayed, and the
sweeper's runs), or the trend of each table's applied changes, failures and missed
changes over the last N days up to today (UTC): increasing, decreasing or stable. No PNG
chart: no plotting library is among the dependencies.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import typer


def report(
    ctx: typer.Context,
    date: Annotated[
        str | None,
        typer.Option(
            "--date", metavar="D", help="Daily report of D: YYYY-MM-DD, today, yesterday."
        ),
    ] = None,
    trend: Annotated[
        str | None,
        typer.Option("--trend", metavar="PERIOD", help="Trends over the last PERIOD: 7d, 2w."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Daily report (--date) or trend analysis per table (--trend) from the control tables."""
    from cdc_recon.apply.status import require_control_tables
    from cdc_recon.exceptions import UsageError
    from cdc_recon.monitor.report import daily_report, parse_day, parse_period, trend_report
    from cdc_recon.monitor.report_sql import daily_counts, sweep_summary
    from cdc_recon.pg.engine import check_connection, create_engine

    if (date is None) == (trend is None):
        raise UsageError("give --date D or --trend PERIOD")
    today = dt.datetime.now(dt.UTC).date()
    if date is not None:
        start, days = parse_day(date, today), 1
    else:
        days = parse_period(trend or "")
        start = today - dt.timedelta(days=days - 1)
    settings = ctx.obj.settings()
    engine = create_engine(settings.target_url, name="target")
    try:
        check_connection(engine, name="target")
        require_control_tables(engine, settings.control_schema)
        counts = daily_counts(engine, settings.control_schema, start, days)
        if date is not None:
            data = daily_report(
                counts, start, sweep_summary(engine, settings.control_schema, start, 1)
            )
        else:
            data = trend_report(counts, start, days)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    elif date is not None:
        _print_daily(data)
    else:
        _print_trends(data)


def _print_daily(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from cdc_recon.monitor.report import FIGURES

    shown = Table(title=f"cdc-recon daily report {data['date']} (UTC)")
    shown.add_column("table")
    for figure in FIGURES:
        shown.add_column(figure, justify="right")
    for row in data["tables"]:
        shown.add_row(row["table"], *(str(row[f]) for f in FIGURES))
    shown.add_row("total", *(str(data["totals"][f]) for f in FIGURES), style="bold")
    console = Console()
    console.print(shown)
    sweeps = data["sweeps"]
    console.print(
        f"sweeps: {sweeps['runs']} run(s), {sweeps['failed']} failed, missed {sweeps['missed']}, "
        f"replayed {sweeps['replayed']}, {sweeps['seconds']} s"
    )


def _print_trends(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = Table(title=f"cdc-recon trends, {data['days']} days from {data['from']} (UTC)")
    for column in ("table", "figure", "per day", "total", "trend"):
        shown.add_column(column, justify="right" if column == "total" else "left")
    for row in data["trends"]:
        values = " ".join(str(v) for v in row["values"])
        shown.add_row(row["table"], row["figure"], values, str(row["total"]), row["trend"])
    Console().print(shown)
