"""Dependencies tell the truth: what src/sft imports is declared, what is declared is imported (deptry, with
the exceptions and their reasons in pyproject.toml), the extras hold what their commands need, and the
installed environment can start a notebook server (``kedro jupyter lab``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: it is in the dev extra (pip install -e '.[dev]')"
    return found


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=~!\[;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_declared_dependencies_are_the_imported_ones() -> None:
    proc = subprocess.run([_tool("deptry"), "src"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_extras_hold_what_their_commands_import() -> None:
    extras = {name: _names(reqs) for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
    assert {"fastapi", "uvicorn", "starlette"} <= extras["dashboard"]
    assert {"jupyterlab", "ipykernel"} <= extras["notebook"]
    assert {"pytest", "ruff", "deptry"} <= extras["dev"]
    # The dashboard's web stack is not a core dependency (it arrived through kedro-viz by accident).
    assert not {"fastapi", "uvicorn", "starlette"} & _names(PYPROJECT["project"]["dependencies"])


def test_install_script_installs_what_the_tests_need() -> None:
    script = (REPO / "scripts" / "install_env.sh").read_text(encoding="utf-8")
    assert 'EXTRAS="dev,dashboard,notebook"' in script and '-e "$ROOT[$EXTRAS]"' in script


def test_kedro_jupyter_lab_starts_in_the_installed_environment() -> None:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [_tool("kedro"), "jupyter", "lab", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "jupyter lab" in proc.stdout.lower()
