"""`cdc-recon trace TABLE KEY...`: why does this row look like this?

    $ cdc-recon -c cdc-recon.yml trace public.customers 7 [--from -7d --to now] [--json]

Every change of the key in the range in source order, the Kafka message(s) that carried
it, what the ledger, the quarantine, the sweeper and reconciliation made of it, and the
current source row beside the target row, differing columns marked. Read-only.
Exit code 1 (and one clear line) when nothing names the key.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import typer

from cdc_recon.timeparse import parse_window


def trace(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="Mapped table, by its source or target name.")],
    key: Annotated[list[str], typer.Argument(help="The key's values, in key-column order.")],
    start: Annotated[str, typer.Option("--from", help="Source time from (ISO, now, -7d).")] = "-7d",
    end: Annotated[str, typer.Option("--to", help="Source time until (exclusive).")] = "now",
    limit: Annotated[int, typer.Option(help="Rows of each record kind at most.", min=1)] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The story of one row: its changes, messages, outcomes, and both current rows."""
    from cdc_recon.trace.reader import TraceRequest, find_mapping, trace_key, unknown_line

    settings = ctx.obj.settings()
    first, last = parse_window(start, end, dt.datetime.now(dt.UTC))
    request = TraceRequest(find_mapping(settings, table), tuple(key), first, last, limit)
    found = trace_key(settings, request)
    if as_json:
        typer.echo(json.dumps(found.as_dict(), indent=2, default=str))
    elif found.known:
        print_trace(found.as_dict())
    if not found.known:
        typer.echo(unknown_line(found.as_dict()), err=as_json)
        raise typer.Exit(1)


def print_trace(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]{data['table']}[/bold] key {data['key_text']} -> {data['target_table']}, "
        f"source time {data['from']} .. {data['to']}"
    )
    changes = Table(title="changes, in source order")
    for column in ("source time", "tx", "op", "message(s)", "outcome", "quarantine", "missed"):
        changes.add_column(column)
    for c in data["changes"]:
        changes.add_row(
            c["source_ts"] or "-",
            c["tx"] or "-",
            c["op"] or "-",
            _messages(c),
            c["outcome"] or "-",
            _quarantine(c["quarantine"]),
            _missed(c["missed"]),
        )
    console.print(changes)
    state = data["key_state"]
    if state:
        console.print(
            f"key state: position {state['position']}, deleted {state['deleted']}, "
            f"incomplete {state['incomplete']}"
        )
    _print_reconciliation(console, data)
    _print_rows(console, data["rows"])
    for note in data["notes"]:
        console.print(f"note: {note}")
    if data["truncated"]:
        console.print(f"cut at --limit: {', '.join(data['truncated'])}")


def _messages(change: dict[str, Any]) -> str:
    if not change["messages"]:
        return "never published"
    return "\n".join(
        f"{m['topic']}[{m['partition']}]@{m['offset']} ({m['seen_by']})" for m in change["messages"]
    )


def _quarantine(entries: list[dict[str, Any]]) -> str:
    return (
        "\n".join(
            f"#{q['id']} {q['reason']} ({q['status']}"
            + (f", retry: {q['retry_outcome']}" if q.get("retry_outcome") else "")
            + f"): {str(q['detail'])[:120]}"
            for q in entries
        )
        or "-"
    )


def _missed(missed: dict[str, Any] | None) -> str:
    if missed is None:
        return "-"
    replayed = f" at {missed['replayed_at']}" if missed.get("replayed_at") else ""
    return f"{missed['status']}{replayed}: {missed['reason']}"


def _print_reconciliation(console: Any, data: dict[str, Any]) -> None:
    for f in data["findings"]:
        console.print(
            f"finding #{f['id']} (run {f['run_id']}, {f['check_name']}): {f['type']} "
            f"{f['severity']} columns {f['columns']} at {f['created_at']}"
        )
    for c in data["corrections"]:
        console.print(
            f"correction #{c['id']} ({c['correction']}, {c['status']}) at {c['created_at']}: "
            f"before {json.dumps(c['before'])} after {json.dumps(c['after'])}"
        )


def _print_rows(console: Any, rows: dict[str, Any]) -> None:
    from rich.table import Table

    shown = Table(title="current rows" + ("" if rows["equal"] else " (differ: marked *)"))
    for column in ("column", "source", "target"):
        shown.add_column(column)
    source, target = rows["source"], rows["target"]
    names = list(dict.fromkeys([*(source or {}), *(target or {})]))
    differing = set(rows["differing"])
    for name in names:
        mark = "* " if name in differing else "  "
        shown.add_row(
            mark + name,
            "(no row)" if source is None else json.dumps(source.get(name)),
            "(no row)" if target is None else json.dumps(target.get(name)),
        )
    console.print(shown)
