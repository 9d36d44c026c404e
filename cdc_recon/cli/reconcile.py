"""The reconciliation commands, registered on the `cdc-recon` app by `cdc_recon.cli.app`.

    $ cdc-recon -c cdc-recon.yml reconcile [--table T] [--check counts|checksums|...|anomalies|all]
          [--incremental] [--json] [--fix [--apply] [--delete-extras] | --export-sql FILE]
    $ cdc-recon -c cdc-recon.yml review list [--status open|resolved|all] [--json]
    $ cdc-recon -c cdc-recon.yml review show ID
    $ cdc-recon -c cdc-recon.yml review resolve ID --action apply-source|keep-target|custom
          [--note TEXT]
    $ cdc-recon -c cdc-recon.yml review summary

`reconcile` exits 0 when every check passes, 1 when a check found inconsistencies or
failed. Errors propagate to `cdc_recon.cli.app.main`, which turns them into exit codes.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

review_app = typer.Typer(help="The review queue of reconciliation findings.", no_args_is_help=True)


def reconcile(
    ctx: typer.Context,
    table: Annotated[
        list[str] | None, typer.Option("--table", "-t", help="Only this table (repeatable).")
    ] = None,
    check: Annotated[
        list[str] | None,
        typer.Option(
            "--check",
            help="counts|checksums|rules|sample|schema|integrity|temporal|anomalies|all "
            "(repeatable; anomalies needs the ml extra, all includes it when installed).",
        ),
    ] = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Checksums of rows changed since the last run.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    fix: Annotated[bool, typer.Option("--fix", help="Plan corrections (a dry run).")] = False,
    apply: Annotated[bool, typer.Option("--apply", help="Write the corrections.")] = False,
    delete_extras: Annotated[
        bool, typer.Option("--delete-extras", help="Delete extra rows instead of queueing them.")
    ] = False,
    export_sql: Annotated[
        Path | None, typer.Option("--export-sql", help="Write the fix SQL to FILE instead.")
    ] = None,
) -> None:
    """Check the source against the target; optionally correct the target (dry run first)."""
    from cdc_recon.exceptions import UsageError
    from cdc_recon.reconcile.corrections import correct_run
    from cdc_recon.reconcile.runner import run_reconcile

    if apply and export_sql:
        raise UsageError("give --apply or --export-sql, not both")
    settings = ctx.obj.settings()
    with _progress(enabled=not as_json) as progress:
        report = run_reconcile(
            settings,
            checks=check or ["all"],
            tables=table,
            incremental=incremental,
            progress=progress,
        )
    data = report.as_dict()
    if fix or apply or export_sql or delete_extras:
        summary = correct_run(
            settings,
            report.run_id,
            apply=apply,
            delete_extras=delete_extras,
            export_sql=export_sql,
        )
        data["corrections"] = summary.as_dict()
    _show_report(data, as_json)
    if report.status != "PASS":
        raise typer.Exit(1)


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]] | None]:
    """A rich progress bar per table on a terminal (stderr), else nothing."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:

        def start(table: str, rows: int) -> Callable[[int], None]:
            task = bar.add_task(f"checksums {table}", total=max(rows, 1))
            return lambda done: bar.advance(task, done)

        yield start


def _show_report(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    shown = Table(title=f"reconcile run {data['run_id']} ({data['mode']}): {data['status']}")
    for column in ("table", "check", "status", "findings", "seconds"):
        shown.add_column(column, justify="right" if column in ("findings", "seconds") else "left")
    for r in data["results"]:
        shown.add_row(
            r["table"], r["check"], r["status"], str(r["findings"]), f"{r['seconds']:.2f}"
        )
    console.print(shown)
    for r in data["results"]:
        if r["error"]:
            console.print(f"{r['table']} {r['check']}: ERROR {r['error']}")
        if r["stats"].get("recommendation"):
            console.print(f"{r['table']} sample: {r['stats']['recommendation']}")
        for f in r["first"]:
            console.print(f"{r['table']} {r['check']} {_finding_line(f)}", markup=False)
    corrections = data.get("corrections")
    if corrections:
        console.print(f"corrections ({corrections['mode']}): {corrections['counts']}")
        for line in corrections["first"]:
            console.print(f"  {line}", markup=False)
        if corrections["export"]:
            console.print(f"fix SQL written to {corrections['export']}")


def _finding_line(f: dict[str, Any]) -> str:
    parts = [f["type"]]
    if f.get("key"):
        parts.append(f["key"])
    if f.get("columns"):
        parts.append("columns " + ",".join(f["columns"]))
    rest = {k: v for k, v in f.items() if k not in ("type", "key", "columns")}
    if rest:
        parts.append(json.dumps(rest, default=str, sort_keys=True))
    return " ".join(parts)


@review_app.command("list")
def review_list(
    ctx: typer.Context,
    status: Annotated[str, typer.Option(help="open | resolved | all")] = "open",
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Items of the review queue, oldest first."""
    from cdc_recon.reconcile.review import list_queue

    items = list_queue(ctx.obj.settings(), None if status == "all" else status, limit)
    if as_json:
        typer.echo(json.dumps(items, indent=2, default=str))
        return
    for i in items:
        typer.echo(
            f"{i['id']:>6} {i['status']:<8} {i['severity']:<8} {i['type']:<8} "
            f"{i['table_name']} {i['key']}"
        )
    typer.echo(f"{len(items)} item(s)")


@review_app.command("show")
def review_show(ctx: typer.Context, item_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """One item with the target row as the check saw it."""
    from cdc_recon.reconcile.review import show_item

    typer.echo(json.dumps(show_item(ctx.obj.settings(), item_id), indent=2, default=str))


@review_app.command("resolve")
def review_resolve(
    ctx: typer.Context,
    item_id: Annotated[int, typer.Argument(metavar="ID")],
    action: Annotated[str, typer.Option(help="apply-source | keep-target | custom")],
    note: Annotated[str | None, typer.Option(help="Why (kept with the item).")] = None,
) -> None:
    """Resolve an item: apply the source's row, keep the target's, or record a custom fix."""
    from cdc_recon.reconcile.review import resolve_item

    done = resolve_item(ctx.obj.settings(), item_id, action, note)
    typer.echo(f"review item {item_id}: {action} ({done})")


@review_app.command("summary")
def review_summary(ctx: typer.Context) -> None:
    """Items by type, severity and status."""
    from cdc_recon.reconcile.review import queue_summary

    rows = queue_summary(ctx.obj.settings())
    for kind, severity, status, count in rows:
        typer.echo(f"{kind:<10} {severity:<9} {status:<9} {count:>7}")
    typer.echo(f"total {sum(r[3] for r in rows)}")
