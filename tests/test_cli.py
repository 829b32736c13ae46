"""One command line: ``sft --help`` lists every command, one line each; sft's commands also work as Kedro
project commands (``kedro cache ...``), and ``sft [options]`` is still ``sft run``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SFT_COMMANDS = {"cache", "dashboard", "dryrun"}


def _run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(REPO / "src"), "COLUMNS": "100"}
    return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _listed(help_text: str, section: str) -> dict[str, str]:
    """name -> one-line description of the commands under ``section``; fails on a wrapped line."""
    block = help_text.split(section, 1)[1].split("\n\n", 1)[0]
    listed = {}
    for line in block.strip("\n").splitlines():
        match = re.fullmatch(r"  (\S+)\s{2,}(\S.*)", line)
        assert match, f"not one line per command: {line!r} in\n{block}"
        listed[match.group(1)] = match.group(2)
    return listed


def test_sft_help_lists_every_command_on_one_line() -> None:
    proc = _run(sys.executable, "-m", "sft", "--help")
    assert proc.returncode == 0, proc.stderr
    listed = _listed(proc.stdout, "Commands:\n")
    assert set(listed) == SFT_COMMANDS | {"run"}
    assert all(len(text) > 10 for text in listed.values()), listed


@pytest.mark.parametrize(
    ("command", "usage"),
    [("cache", "usage: sft cache"), ("dashboard", "usage: sft dashboard"), ("dryrun", "Usage: sft dryrun")],
)
def test_each_command_shows_its_own_help(command: str, usage: str) -> None:
    proc = _run(sys.executable, "-m", "sft", command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert usage in proc.stdout


def test_sft_commands_are_kedro_project_commands(tmp_path: Path) -> None:
    proc = _run(str(Path(sys.executable).parent / "kedro"), "--help")
    assert proc.returncode == 0, proc.stderr
    assert set(_listed(proc.stdout, "Project specific commands from sft\nCommands:\n")) == SFT_COMMANDS
    # A real call through Kedro's command line: the cache command on an empty project dir.
    proc = _run(str(Path(sys.executable).parent / "kedro"), "cache", "--project", str(tmp_path), "info")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 entries" in proc.stdout or "no cache" in proc.stdout.lower(), proc.stdout


def test_options_without_a_command_mean_run() -> None:
    proc = _run(sys.executable, "-m", "sft", "--pipeline", "no_such_pipeline")
    assert proc.returncode != 0
    assert "no_such_pipeline" in proc.stdout + proc.stderr
    assert "No such command" not in proc.stdout + proc.stderr


def test_dashboard_without_its_extra_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from sft.cli import cli

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the 'dashboard' extra were not installed
    result = CliRunner().invoke(cli, ["dashboard", "--project-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "'dashboard' extra" in result.output and "uvicorn" in result.output
