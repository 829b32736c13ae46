"""Shared fixtures. Every test runs offline and without telemetry."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL_DIR = PROJECT_ROOT / "artifacts" / "demo" / "tiny-qwen3"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny Qwen3 model + tokenizer (built once; scripts/test.sh builds it up front)."""
    from tests.support.tiny_model import build_tiny_model

    return build_tiny_model(TINY_MODEL_DIR)


@pytest.fixture
def project_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch copy of the project's config-bearing files, selected as the project root."""
    dest = tmp_path / "proj"
    dest.mkdir()
    for name in ("config.yaml", "config.demo.yaml", "pyproject.toml"):
        shutil.copy2(PROJECT_ROOT / name, dest / name)
    shutil.copytree(PROJECT_ROOT / "conf", dest / "conf", ignore=shutil.ignore_patterns("local"))
    (dest / "conf" / "local").mkdir(exist_ok=True)
    (dest / "src").mkdir()  # bootstrap_project expects the source dir (the package itself is installed)
    (dest / "artifacts" / "data").mkdir(parents=True)
    excl = PROJECT_ROOT / "artifacts" / "data" / "excluded_repos.txt"
    if excl.exists():
        shutil.copy2(excl, dest / "artifacts" / "data" / "excluded_repos.txt")
    shutil.copytree(
        PROJECT_ROOT / "artifacts" / "training_config" / "deepspeed",
        dest / "artifacts" / "training_config" / "deepspeed",
    )
    monkeypatch.setenv("SFT_PROJECT_ROOT", str(dest))
    monkeypatch.delenv("SFT_CONFIG", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    return dest
