"""The `cdc-recon` command line.

This module is the only place that turns errors into exit codes and one-line messages;
`--debug` shows the traceback as well.

    $ cdc-recon -c cdc-recon.yml config
    $ cdc-recon -c cdc-recon.yml init
    $ cdc-recon -c cdc-recon.yml run [--until-idle 5]
    $ cdc-recon -c cdc-recon.yml status [--json]
    $ cdc-recon -c cdc-recon.yml source install --table public.customers
    $ cdc-recon -c cdc-recon.yml sweep --once [--from -2h --to -5m] [--json]
    $ cdc-recon -c cdc-recon.yml replay --from -2h [--to now] [--source source-db] [--dry-run]
    $ cdc-recon -c cdc-recon.yml failures list|show ID|retry [ID...]|resolve ID... --note T
    $ cdc-recon -c cdc-recon.yml prune --once [--dry-run] [--json]
    $ cdc-recon -c cdc-recon.yml trace public.customers 7 [--from -7d] [--json]
    $ cdc-recon workload run --schema shop --rate 200 --duration 60   # a source workload
    $ cdc-recon --version
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cdc_recon import __version__
from cdc_recon.batch import printable
from cdc_recon.cli.failures import failures_app
from cdc_recon.cli.reconcile import reconcile, review_app
from cdc_recon.cli.replay import replay
from cdc_recon.cli.report import report
from cdc_recon.cli.retention import prune, show_prune_state
from cdc_recon.cli.sweep import source_app, sweep
from cdc_recon.cli.trace import trace
from cdc_recon.cli.workload import workload_app
from cdc_recon.config import Settings, load_settings
from cdc_recon.exceptions import CdcReconError

app = typer.Typer(
    name="cdc-recon",
    help="Apply Kafka CDC events exactly once in effect, and prove nothing was missed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class State:
    """What the global options set up for the subcommands."""

    def __init__(self, config: Path | None, debug: bool) -> None:
        self.config = config
        self.debug = debug

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(self.config, **overrides)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cdc-recon {__version__}")
        raise typer.Exit()


class OneLineFormatter(logging.Formatter):
    """Each log record on one line: a newline or other control character in a message
    (a table name from an event, say) is written as an escape, so that no input can
    forge a log line. Tracebacks (`--debug`) follow as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return printable(super().formatMessage(record))


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file (env CDC_RECON_* overrides it)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
    if not debug:  # librdkafka retries loudly; its errors reach the user as ours
        logging.getLogger("cdc_recon.kafka").setLevel(logging.CRITICAL)
    ctx.obj = State(config, debug)


@app.command("config")
def show_config(ctx: typer.Context) -> None:
    """Print the effective configuration as JSON, secrets masked."""
    settings = ctx.obj.settings()
    typer.echo(json.dumps(settings.masked(), indent=2, sort_keys=True))


@app.command()
def doctor(ctx: typer.Context) -> None:
    """Check that Kafka and the databases answer: a Kafka round trip and a transaction on each."""
    from cdc_recon.cli.doctor import run_checks

    run_checks(ctx.obj.settings())


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the ledger and control tables in the target database (idempotent)."""
    from cdc_recon.apply.status import present_tables
    from cdc_recon.control_schema import init_control_schema
    from cdc_recon.pg.engine import check_connection, create_engine

    settings = ctx.obj.settings()
    engine = create_engine(settings.target_url, name="target")
    try:
        check_connection(engine, name="target")
        present = present_tables(engine, settings.control_schema)
        converted: list[Any] = []
        tables = init_control_schema(
            engine, settings.control_schema, settings.ledger, converted=converted
        )
    finally:
        engine.dispose()
    for table in tables:
        typer.echo(f"{'exists ' if table in present else 'created'} {table}")
    for done in converted:
        into = f"partition {done.partition}" if done.partition else "nothing (it was empty)"
        typer.echo(
            f"converted {settings.control_schema}.ledger to partitions by source time: "
            f"{done.rows} rows kept as {into}, in {done.seconds:.1f} s"
        )


@app.command()
def run(
    ctx: typer.Context,
    until_idle: Annotated[
        float | None,
        typer.Option(
            "--until-idle",
            min=0,
            metavar="SECONDS",
            help="Exit once caught up and no message arrived for SECONDS (batch runs, tests).",
        ),
    ] = None,
) -> None:
    """Apply the configured topics to the target until SIGTERM/SIGINT (then exit 0)."""
    from cdc_recon.run import run_service

    settings = ctx.obj.settings()
    if not ctx.obj.debug:
        logging.getLogger("cdc_recon").setLevel(logging.INFO)
    stats = run_service(settings, until_idle=until_idle)
    typer.echo(f"cdc-recon: stopped after {stats.summary()}")


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Per partition: stored offset, end offset and lag; the ledger, failures by reason
    and their dead letters by state (pending, sent, too_large, refused); per control
    table, what the pruner removed last and when."""
    data = _collect_status(ctx.obj.settings())
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        _print_status(data)


def _collect_status(settings: Settings) -> dict[str, Any]:
    """The target's control tables joined with Kafka's end and committed offsets."""
    from cdc_recon.apply.progress import partition_lag
    from cdc_recon.apply.status import read_target_status, require_control_tables
    from cdc_recon.kafka.admin import describe_cluster
    from cdc_recon.kafka.consumer import GroupConsumer
    from cdc_recon.pg.engine import check_connection, create_engine
    from cdc_recon.retention.status import read_prune_state
    from cdc_recon.sweep.completeness import read_completeness

    engine = create_engine(settings.target_url, name="target")
    try:
        check_connection(engine, name="target")
        require_control_tables(engine, settings.control_schema)
        target = read_target_status(engine, settings.control_schema, settings.group_id, settings)
        retention = read_prune_state(engine, settings.control_schema)
        with engine.connect() as conn:
            complete = read_completeness(conn, settings.control_schema, settings.group_id)
    finally:
        engine.dispose()
    describe_cluster(settings.kafka_bootstrap)
    with GroupConsumer(settings) as consumer:
        keys = sorted(set(consumer.partitions(settings.topics)) | set(target.offsets))
        marks = consumer.watermarks(keys)
        committed = consumer.committed(keys)
    partitions = []
    for key in keys:
        stored = target.offsets.get(key)
        start = stored if stored is not None else committed.get(key)
        end = marks[key].high if key in marks else None
        lag = partition_lag(start, marks[key]) if key in marks else None
        partitions.append(
            {
                "topic": key[0],
                "partition": key[1],
                "stored_offset": stored,
                "committed_offset": committed.get(key),
                "end_offset": end,
                "lag": lag,
            }
        )
    failures: dict[str, dict[str, int]] = {}
    for (reason, state), count in sorted(target.failures.items()):
        failures.setdefault(reason, {})[state] = count
    return {
        "group_id": settings.group_id,
        "partitions": partitions,
        "total_lag": sum(p["lag"] or 0 for p in partitions),
        "ledger": dict(sorted(target.ledger.items())),
        "ledger_partitions": target.partitions.as_dict(),
        "failures": failures,
        "dead_letters": dict(sorted(target.dead_letters.items())),
        "retention": retention,
        "completeness": complete.as_dict(dt.datetime.now(dt.UTC)),
    }


def _print_status(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(completeness_headline(data["completeness"]))
    shown = Table(title=f"partitions of group {data['group_id']}")
    for column in ("topic", "partition", "stored", "committed", "end", "lag"):
        shown.add_column(column, justify="left" if column == "topic" else "right")
    for p in data["partitions"]:
        values = (p["stored_offset"], p["committed_offset"], p["end_offset"], p["lag"])
        shown.add_row(
            p["topic"], str(p["partition"]), *("-" if v is None else str(v) for v in values)
        )
    console.print(shown)
    console.print(f"total lag: {data['total_lag']}")
    ledger = Table(title="ledger")
    ledger.add_column("outcome")
    ledger.add_column("changes", justify="right")
    for outcome, count in data["ledger"].items():
        ledger.add_row(outcome, str(count))
    console.print(ledger)
    _print_partitions(console, data["ledger_partitions"])
    failures = Table(title="failures")
    for column in ("reason", "status", "messages"):
        failures.add_column(column, justify="right" if column == "messages" else "left")
    for reason, states in data["failures"].items():
        for state, count in states.items():
            failures.add_row(reason, state, str(count))
    console.print(failures)
    dead_letters = Table(title="dead letters")
    dead_letters.add_column("state")
    dead_letters.add_column("failures", justify="right")
    for state, count in data["dead_letters"].items():
        dead_letters.add_row(state, str(count))
    console.print(dead_letters)
    show_prune_state(console, data["retention"])


def completeness_headline(data: dict[str, Any]) -> str:
    """One line: the share of verified changes that arrived, what is missing, since when."""
    overall = data["overall"]
    if overall["ratio"] is None:
        return "completeness: nothing verified yet (the sweeper has not closed a window)"
    tables = ", ".join(
        f"{t['table']} {t['ratio'] * 100:.3f}%" for t in data["tables"] if t["ratio"] is not None
    )
    age = overall["oldest_unverified_age_seconds"]
    return (
        f"completeness: {overall['ratio'] * 100:.3f}% of {overall['verified']} verified "
        f"changes, {overall['missing']} still missing, oldest unverified change "
        f"{age:.0f} s old ({tables})"
    )


def _print_partitions(console: Any, data: dict[str, Any]) -> None:
    from rich.table import Table

    shown = Table(title="ledger partitions (source time, UTC)")
    for column in ("partition", "from", "to", "rows (est.)"):
        shown.add_column(column, justify="right" if column == "rows (est.)" else "left")
    for p in data["partitions"]:
        name = p["name"] + (" (detaching)" if p.get("detaching") else "")
        shown.add_row(name, p["from"], p["to"], str(p["rows"]))
    console.print(shown)
    console.print(f"oldest kept: {data['oldest_kept'] or '-'}")
    if data["next_drop"] is None:
        console.print("next drop: none (no partitions)")
    elif data["next_drop_at"] is None:
        console.print(
            f"next drop: {data['next_drop']}, once the sweeper's watermark "
            f"({data['watermark'] or 'none yet'}) has passed it"
        )
    else:
        console.print(f"next drop: {data['next_drop']} at {data['next_drop_at']}")


app.add_typer(source_app, name="source")
app.command()(sweep)
app.command()(replay)
app.command()(prune)
app.command()(report)
app.command()(trace)
app.command()(reconcile)
app.add_typer(review_app, name="review")
app.add_typer(workload_app, name="workload")
app.add_typer(failures_app, name="failures")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = argv if argv is not None else sys.argv[1:]
    try:
        app(args=args, prog_name="cdc-recon")
    except SystemExit as exc:  # typer exits on --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except CdcReconError as exc:
        if "--debug" in args:
            raise
        typer.echo(f"cdc-recon: error: {printable(str(exc), 1000)}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("cdc-recon: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug of ours: still one line, naming the cause
        if "--debug" in args:
            raise
        cause = printable(f"{type(exc).__name__}: {exc}", 1000)
        typer.echo(f"cdc-recon: internal error: {cause} (--debug shows where)", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
