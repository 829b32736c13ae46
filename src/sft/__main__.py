"""`python -m sft` / the `sft` console script: Kedro's ``run`` plus sft's own commands (``sft.cli``).

``sft --help`` lists every command, one line each. ``sft`` alone, or followed by options
(``sft --pipeline=convert``), is ``sft run``: the behaviour of Kedro's project template, kept.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from kedro.framework.cli.utils import find_run_command
from kedro.framework.project import configure_project

from sft.cli import cli as sft_commands

_HELP = (
    "sft: Harbor trajectories -> LLaMA-Factory dataset -> fine-tuned model (a Kedro project).\n\n"
    "`sft` alone or `sft --pipeline=NAME ...` is `sft run`. Kedro's other commands (viz, jupyter, "
    "catalog, ...) are under `kedro`, which lists sft's commands too."
)


def build_cli(package_name: str) -> click.Group:
    """The ``sft`` command line: Kedro's run command (or a plugin's) and sft's commands."""
    group = click.Group(name="sft", help=_HELP, context_settings={"help_option_names": ["-h", "--help"]})
    run = find_run_command(package_name)
    group.add_command(run, name="run")
    if not run.short_help:  # Kedro's run has a long docstring; one line in the listing
        run.short_help = "Run a pipeline (default: the whole stage)."
    for name, command in sft_commands.commands.items():
        group.add_command(command, name=name)
    return group


def main() -> None:
    package_name = Path(__file__).parent.name
    configure_project(package_name)
    argv = list(sys.argv[1:])
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")
    build_cli(package_name).main(args=argv, prog_name="sft")


if __name__ == "__main__":
    main()
