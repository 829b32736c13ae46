"""sft's own commands, on both command lines: ``sft <command>`` and ``kedro <command>``.

Kedro 1.7 loads a project's commands from ``<package>.cli``: the click group ``cli`` here is merged into
the ``kedro`` command line inside the project (built-in < plugins < this module), so ``kedro dryrun``,
``kedro cache`` and ``kedro dashboard`` work and ``kedro --help`` lists them beside ``run``, ``viz`` and
``jupyter``. The ``sft`` console script (``sft.__main__``) shows the same commands plus Kedro's ``run``,
one line each, so a newcomer finds everything under one ``--help``. Kedro's ``find_run_command`` reads
``run`` from this module, which is why Kedro's own run command is re-exported unchanged.

The commands keep their own parsers (argparse in ``sft.engine.cache_cli`` and ``sft.dashboard.cli``):
the click commands only forward their arguments, so ``sft cache prune --help`` is the cache's help.
"""

from __future__ import annotations

import sys

import click
from kedro.framework.cli.project import run  # noqa: F401  (re-exported for Kedro's find_run_command)

_DASHBOARD_MODULES = {"fastapi", "starlette", "uvicorn"}
# A command that hands every argument, --help included, to the command's own parser.
_FORWARD = {
    "context_settings": {"ignore_unknown_options": True, "allow_extra_args": True},
    "add_help_option": False,
}


@click.group(name="sft")
def cli() -> None:
    """sft's project commands."""


@cli.command(short_help="Pre-flight checks: environment, config, data, GPUs.")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
def dryrun(config: str | None) -> None:
    """Run the pre-flight checks for CONFIG (default: $SFT_CONFIG or config.yaml) and print a report;
    exit 1 when a check fails."""
    from sft.preflight.dryrun import main

    sys.exit(main([config] if config else []))


@cli.command(short_help="Conversion cache: info, prune unused entries, clear.", **_FORWARD)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cache(args: tuple[str, ...]) -> None:
    from sft.engine.cache_cli import main

    sys.exit(main(list(args)))


@cli.command(short_help="Read-only live dashboard of runs and datasets.", **_FORWARD)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dashboard(args: tuple[str, ...]) -> None:
    from sft.dashboard.cli import main

    try:
        code = main(list(args))
    except ModuleNotFoundError as exc:  # the web stack is an optional extra
        if exc.name not in _DASHBOARD_MODULES:
            raise
        raise click.ClickException(
            f"sft dashboard needs {exc.name!r}, which is in the 'dashboard' extra: pip install -e '.[dashboard]'"
        ) from exc
    sys.exit(code)
