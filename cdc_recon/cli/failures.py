"""The `failures` commands: work off the quarantine. Registered by `cdc_recon.cli.app`.

    $ cdc-recon -c cdc-recon.yml failures list [--reason R] [--table T] [--topic T]
          [--since -1d] [--until now] [--status open|retried|resolved|all] [--limit N] [--json]
    $ cdc-recon -c cdc-recon.yml failures show ID [--json]
    $ cdc-recon -c cdc-recon.yml failures retry [ID...] [filters | --all] [--dry-run] [--json]
    $ cdc-recon -c cdc-recon.yml failures resolve ID... --note "dropped: test data"

Times as for `replay --from` (`cdc_recon.timeparse`). `retry` exits 1 when some rows
still fail (their new reason is stored); errors propagate to `cdc_recon.cli.app.main`,
which turns them into exit codes and one-line messages.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cdc_recon.cli.progress import progress_bar

if TYPE_CHECKING:
    import sqlalchemy as sa

    from cdc_recon.config import Settings

failures_app = typer.Typer(
    help="List, show, retry and resolve quarantined messages.", no_args_is_help=True
)

Reasons = Annotated[
    list[str] | None, typer.Option("--reason", "-r", help="Only this reason (repeatable).")
]
Tables = Annotated[
    list[str] | None, typer.Option("--table", "-t", help="Only this source table (repeatable).")
]
Topics = Annotated[list[str] | None, typer.Option("--topic", help="Only this topic (repeatable).")]
Since = Annotated[
    str | None, typer.Option("--since", metavar="T", help="Quarantined at or after T: ISO, -2h.")
]
Until = Annotated[str | None, typer.Option("--until", metavar="T", help="Quarantined before T.")]
Statuses = Annotated[
    list[str] | None,
    typer.Option("--status", "-s", help="open (default), retried, resolved or all (repeatable)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


DETAIL_WIDTH = 120
SUMMARY_ROWS = ("read", "applied", "superseded", "duplicates", "skipped", "failed")
SHOW_FIELDS = (  # (label, key of the `describe` document)
    ("where", None),
    ("quarantined", "created_at"),
    ("reason", "reason"),
    ("detail", "detail"),
    ("source table", "source_table"),
    ("dead letter", "dead_letter"),
    ("dead letter detail", "dead_letter_detail"),
    ("retries", "attempts"),
    ("last retry", "retried_at"),
    ("retry outcome", "retry_outcome"),
    ("resolved", "resolved_at"),
    ("note", "note"),
)


def detail_cell(detail: str, width: int = DETAIL_WIDTH) -> str:
    """A detail cut to one table cell."""
    return detail if len(detail) <= width else detail[: width - 1] + "…"


def status_cell(status: str, outcome: str | None) -> str:
    """`retried (superseded)`: what the retry found, beside the status."""
    return f"{status} ({outcome})" if status == "retried" and outcome else status


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, int]]:
    return [(name, int(summary[name])) for name in SUMMARY_ROWS]


def show_lines(document: dict[str, Any]) -> list[str]:
    """`failures show` as text: the row, then the decoded change or why there is none,
    then the raw bytes (escaped: one line each, whatever they hold)."""
    where = f"{document['topic']}[{document['kafka_partition']}]@{document['kafka_offset']}"
    lines = [f"failure {document['id']} ({document['status']})"]
    for label, key in SHOW_FIELDS:
        value = where if key is None else document.get(key)
        if value is not None and value != "":
            lines.append(f"  {label:<19} {value}")
    event = document.get("event")
    if event is not None:
        lines.append("  decoded (current configuration):")
        for key in ("table", "op", "key", "after", "position", "tx", "source_ts_ms"):
            value = event.get(key)
            shown = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
            lines.append(f"    {key:<17} {shown}")
    else:
        lines.append(f"  not decoded: {document.get('decode_error')}")
    for label, key in (("raw key", "raw_key"), ("raw value", "raw_value")):
        raw = document.get(key)
        text = "(null)" if raw is None else f"{raw['text']}  ({raw['bytes']} bytes)"
        lines.append(f"  {label:<19} {text}")
    return lines


@contextmanager
def _target(settings: Settings) -> Iterator[sa.Engine]:
    """The target database, holding up-to-date control tables."""
    from cdc_recon.apply.status import require_control_tables
    from cdc_recon.pg.engine import check_connection, create_engine

    engine = create_engine(settings.target_url, name="target")
    try:
        check_connection(engine, name="target")
        require_control_tables(engine, settings.control_schema)
        yield engine
    finally:
        engine.dispose()


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@failures_app.command("list")
def list_command(
    ctx: typer.Context,
    reason: Reasons = None,
    table: Tables = None,
    topic: Topics = None,
    since: Since = None,
    until: Until = None,
    status: Statuses = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most N rows.")] = 100,
    as_json: AsJson = False,
) -> None:
    """Quarantined messages, oldest first (open ones unless --status says otherwise)."""
    from cdc_recon.apply.failures import count_failures, failure_filter, list_failures

    which = failure_filter(
        reasons=reason,
        tables=table,
        topics=topic,
        since=since,
        until=until,
        statuses=status,
    )
    settings = ctx.obj.settings()
    with _target(settings) as engine:
        total = count_failures(engine, settings.control_schema, which)
        limited = dataclasses.replace(which, limit=limit)
        rows = list_failures(engine, settings.control_schema, limited)
    if as_json:
        _echo_json({"items": [row.as_dict() for row in rows], "total": total})
        return
    _print_list(rows, total)


def _print_list(rows: list[Any], total: int) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = Table(title="failures")
    for column in ("id", "quarantined", "where", "reason", "table", "status", "detail"):
        shown.add_column(column, justify="right" if column == "id" else "left", overflow="fold")
    for row in rows:
        shown.add_row(
            str(row.id),
            row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            row.where,
            row.reason,
            row.source_table or "-",
            status_cell(row.status, row.retry_outcome),
            detail_cell(row.detail),
        )
    console = Console()
    console.print(shown)
    more = f" (showing {len(rows)}; --limit shows more)" if total > len(rows) else ""
    console.print(f"{total} failure(s){more}")


@failures_app.command("show")
def show_command(
    ctx: typer.Context,
    failure_id: Annotated[int, typer.Argument(metavar="ID", help="The failure's id.")],
    as_json: AsJson = False,
) -> None:
    """One failure: the message decoded with the current configuration (or its raw bytes,
    escaped), its reason and detail, Kafka coordinates and dead-letter state."""
    from cdc_recon.apply.failures import describe, get_failure

    settings = ctx.obj.settings()
    with _target(settings) as engine:
        row = get_failure(engine, settings.control_schema, failure_id)
    document = describe(row, settings)
    if as_json:
        _echo_json(document)
        return
    for line in show_lines(document):
        typer.echo(line)


@failures_app.command("retry")
def retry_command(
    ctx: typer.Context,
    ids: Annotated[
        list[int] | None, typer.Argument(metavar="ID", help="Failures to retry (open or retried).")
    ] = None,
    reason: Reasons = None,
    table: Tables = None,
    topic: Topics = None,
    since: Since = None,
    until: Until = None,
    status: Statuses = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every open failure (when no id or filter is given).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what a retry would do; write nothing.")
    ] = False,
    chunk: Annotated[
        int, typer.Option("--chunk", min=1, help="Failures per applier batch.")
    ] = 1000,
    as_json: AsJson = False,
) -> None:
    """Decode the stored bytes again with the current configuration and apply them
    through the applier (position-guarded; one already applied is a duplicate)."""
    from cdc_recon.apply.failures import failure_filter, require_ids
    from cdc_recon.apply.retry import retry_failures
    from cdc_recon.exceptions import UsageError

    filtered = any((reason, table, topic, since, until, status))
    if not (ids or filtered or every):
        raise UsageError("name the failures to retry: ids, filters (--reason ...), or --all")
    which = failure_filter(
        ids=ids,
        reasons=reason,
        tables=table,
        topics=topic,
        since=since,
        until=until,
        statuses=status,
        # A retried row may be retried again by id (it comes back a duplicate); a
        # resolved one never is.
        default_statuses=("open", "retried") if ids else ("open",),
    )
    settings = ctx.obj.settings()
    with _target(settings) as engine:
        require_ids(engine, settings.control_schema, ids or [])
        with progress_bar("retry", enabled=not as_json) as progress:
            summary = retry_failures(
                engine, settings, which, dry_run=dry_run, chunk=chunk, progress=progress
            )
    if as_json:
        _echo_json(summary.as_dict())
    else:
        _print_retry(summary.as_dict())
    if summary.failed and not dry_run:
        raise typer.Exit(1)


def _print_retry(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = "retry (dry run: nothing written)" if summary["dry_run"] else "retry"
    shown = Table(title=title)
    shown.add_column("failures")
    shown.add_column("count", justify="right")
    for name, count in summary_rows(summary):
        shown.add_row(name, str(count))
    console.print(shown)
    if summary["failing"]:
        failing = Table(title="still failing" if not summary["dry_run"] else "would fail")
        for column in ("id", "where", "reason", "detail"):
            failing.add_column(column, overflow="fold")
        for item in summary["failing"]:
            failing.add_row(
                str(item["id"]), item["where"], item["reason"], detail_cell(item["detail"])
            )
        console.print(failing)


@failures_app.command("resolve")
def resolve_command(
    ctx: typer.Context,
    ids: Annotated[list[int], typer.Argument(metavar="ID", help="Failures to close.")],
    note: Annotated[
        str, typer.Option("--note", "-m", help="Why they are closed without being applied.")
    ],
    as_json: AsJson = False,
) -> None:
    """Close open failures without applying them; they stop counting as missed."""
    from cdc_recon.apply.failures import resolve_failures

    settings = ctx.obj.settings()
    with _target(settings) as engine:
        done = resolve_failures(engine, settings.control_schema, ids, note)
    if as_json:
        _echo_json(done.as_dict())
        return
    if done.resolved:
        typer.echo(f"resolved {len(done.resolved)}: {', '.join(map(str, done.resolved))}")
    for failure_id, state in sorted(done.not_open.items()):
        typer.echo(f"not open, left as it is: {failure_id} ({state})")
