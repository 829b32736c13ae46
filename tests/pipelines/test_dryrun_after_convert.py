"""Once a dataset is converted, dryrun shows its over-length and template-fidelity summary."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.pipelines.conftest import run_session

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dryrun_shows_length_and_fidelity_summary(demo_project: Path) -> None:
    run_session(demo_project, "convert")
    os.symlink(ROOT / "artifacts" / "env", demo_project / "artifacts" / "env")  # the real training env
    env = {**os.environ, "SFT_PROJECT_ROOT": str(demo_project), "SFT_CONFIG": "config.demo.yaml"}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "dryrun.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[INFO] over-length (drop): 0 over cutoff, 0 dropped" in proc.stdout
    assert "[INFO] template fidelity: ok, 0 of" in proc.stdout
    assert "registered in" in proc.stdout
