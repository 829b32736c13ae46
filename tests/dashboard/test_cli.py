"""The command line: loopback by default, a warning and no Host restriction when bound elsewhere."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sft.dashboard import cli
from tests.dashboard.fake_project import FakeProject


@pytest.fixture
def captured_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    calls: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        calls["app"], calls["kwargs"] = app, kwargs

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setattr(logging, "basicConfig", lambda **_: None)  # keep pytest's caplog handler
    return calls


def middleware_names(app: Any) -> list[str]:
    return [m.cls.__name__ for m in app.user_middleware]


def test_defaults_bind_loopback_with_a_host_check(
    project: FakeProject, captured_run: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sft.dashboard")
    assert cli.main(["--project-dir", str(project.root)]) == 0
    assert captured_run["kwargs"]["host"] == "127.0.0.1" and captured_run["kwargs"]["port"] == 8091
    assert "TrustedHostMiddleware" in middleware_names(captured_run["app"])
    assert "NOT loopback" not in caplog.text


def test_binding_elsewhere_warns(
    project: FakeProject, captured_run: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sft.dashboard")
    assert cli.main(["--host", "0.0.0.0", "--port", "9999", "--project-dir", str(project.root)]) == 0
    assert captured_run["kwargs"]["host"] == "0.0.0.0" and captured_run["kwargs"]["port"] == 9999
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("0.0.0.0:9999, NOT loopback" in r.getMessage() for r in warnings)
    assert "TrustedHostMiddleware" not in middleware_names(captured_run["app"])


def test_missing_project_dir_is_an_error(
    tmp_path: Path, captured_run: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    assert cli.main(["--project-dir", str(tmp_path / "nope")]) == 2
    assert "app" not in captured_run
    assert "does not exist" in caplog.text


def test_module_and_script_entry_points_show_their_flags() -> None:
    root = Path(__file__).resolve().parents[2]
    for command in (
        [sys.executable, "-m", "sft.dashboard", "--help"],
        ["bash", "scripts/dashboard.sh", "--help"],
    ):
        proc = subprocess.run(
            command,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "SFT_PYTHON": sys.executable},
        )
        assert proc.returncode == 0, proc.stderr
        for flag in ("--host", "--port", "--project-dir", "--poll-seconds"):
            assert flag in proc.stdout
