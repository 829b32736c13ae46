"""A scratch project with the demo job and the tiny model, for Kedro session tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_project(project_copy: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (project_copy / "data" / "01_raw").mkdir(parents=True)
    os.symlink(ROOT / "data" / "01_raw" / "demo_job", project_copy / "data" / "01_raw" / "demo_job")
    (project_copy / "artifacts" / "demo").mkdir(parents=True)
    os.symlink(tiny_model_dir, project_copy / "artifacts" / "demo" / "tiny-qwen3")
    monkeypatch.setenv("SFT_CONFIG", "config.demo.yaml")
    monkeypatch.chdir(project_copy)
    return project_copy


def run_session(project: Path, pipeline: str | None = None, runtime_params: dict | None = None) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=runtime_params or {}) as session:
        session.run(pipeline_names=[pipeline] if pipeline else None)
