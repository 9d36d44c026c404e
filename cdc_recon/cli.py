"""The `cdc-recon` command line.

This module is the only place that turns errors into exit codes and one-line messages;
`--debug` shows the traceback as well.

    $ cdc-recon -c cdc-recon.yml config
    $ cdc-recon --version
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cdc_recon import __version__
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
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
    from cdc_recon.doctor import run_checks

    run_checks(ctx.obj.settings())


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
        typer.echo(f"cdc-recon: error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("cdc-recon: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
