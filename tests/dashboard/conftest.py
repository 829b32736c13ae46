"""Fixtures for the dashboard tests: a fake project laid out like a real one, and an API client on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sft.dashboard import create_app
from tests.dashboard.fake_project import FakeProject, make_project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProject:
    # The secrets must come from the project's files, not from the test runner's environment.
    for name in ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return make_project(tmp_path / "proj")


@pytest.fixture
def client(project: FakeProject) -> TestClient:
    return TestClient(create_app(project.root))
