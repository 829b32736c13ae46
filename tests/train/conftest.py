"""Fixtures for the training tests: a scratch project, a small ShareGPT dataset, config builders.

Training tests run the real ``llamafactory-cli`` from the project's training env on CPU with the tiny
Qwen3 (``tests/conftest.py::tiny_model_dir``), a few optimizer steps each.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sft.config.loader import load_config
from sft.config.schema import SftConfig
from tests.train.helpers import DATASET_KEY, PROJECT_ROOT, base_config, sharegpt_rows, write_config


@pytest.fixture(scope="session")
def lf_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/lf_data`` with ``tiny_agent_sft.json`` and its ``dataset_info.json`` entry."""
    directory = tmp_path_factory.mktemp("lf_data")
    (directory / f"{DATASET_KEY}.json").write_text(
        json.dumps(sharegpt_rows(), ensure_ascii=False), encoding="utf-8"
    )
    info = {
        DATASET_KEY: {
            "file_name": f"{DATASET_KEY}.json",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
        }
    }
    (directory / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return directory


@pytest.fixture
def train_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch project root with the shipped DeepSpeed configs; no credentials in the environment."""
    root = tmp_path / "proj"
    (root / "artifacts" / "training_config").mkdir(parents=True)
    shutil.copytree(
        PROJECT_ROOT / "artifacts" / "training_config" / "deepspeed",
        root / "artifacts" / "training_config" / "deepspeed",
    )
    for name in (
        "WANDB_API_KEY",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "SFT_ALLOW_OVERWRITE_OUTPUT",
        "SFT_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("SFT_PROJECT_ROOT", str(root))
    return root


@pytest.fixture
def make_config(train_root: Path, tiny_model_dir: Path) -> Callable[..., tuple[SftConfig, Path]]:
    """``make_config(training overrides..., experiment=..., name=...) -> (SftConfig, config path)``."""

    def build(
        *, experiment: dict[str, Any] | None = None, name: str = "config.yaml", **training: Any
    ) -> tuple[SftConfig, Path]:
        data = base_config(tiny_model_dir, **training)
        if experiment:
            data["runtime_info"]["input"]["experiment"].update(experiment)
        path = write_config(train_root, data, name)
        return load_config(path), path

    return build
