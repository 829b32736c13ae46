"""``run_training`` refuses before anything is launched, records the refusal, and leaves the config alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sft.config.schema import SftConfig
from sft.train import TrainingError, run_training
from sft.train.launch import output_dir_lock
from tests.train.helpers import read_index

MakeConfig = Callable[..., tuple[SftConfig, Path]]


def _refused(cfg: SftConfig, config_path: Path, root: Path, dataset_dir: Path, match: str) -> None:
    before = config_path.read_bytes()
    with pytest.raises(TrainingError, match=match):
        run_training(cfg, config_path=config_path, root=root, dataset_dir=dataset_dir, on_progress=None)
    assert config_path.read_bytes() == before
    assert not (root / "artifacts" / "logs").exists()  # nothing was launched
    assert read_index(root)[-1]["status"] == "failed"


def test_refuses_a_non_empty_output_dir(
    make_config: MakeConfig, train_root: Path, lf_dataset_dir: Path
) -> None:
    run_dir = train_root / "artifacts" / "model" / "tiny_run"
    (run_dir / "checkpoint-5").mkdir(parents=True)
    cfg, config_path = make_config(max_steps=2)
    _refused(cfg, config_path, train_root, lf_dataset_dir, "tiny_run is not empty")
    assert (run_dir / "checkpoint-5").is_dir()  # nothing was deleted
    notes = read_index(train_root)[-1]["notes"]
    assert notes.startswith("refused before launch:") and "resume_from_checkpoint" in notes


def test_refuses_an_output_dir_another_live_run_trains_into(
    make_config: MakeConfig, train_root: Path, lf_dataset_dir: Path
) -> None:
    cfg, config_path = make_config(max_steps=2)
    with output_dir_lock(train_root / "artifacts" / "model" / "tiny_run"):
        _refused(cfg, config_path, train_root, lf_dataset_dir, "in use by another live sft training run")


def test_refuses_a_typo_under_training(
    make_config: MakeConfig, train_root: Path, lf_dataset_dir: Path
) -> None:
    cfg, config_path = make_config(max_steps=2, warmup_ratoi=0.1)
    _refused(cfg, config_path, train_root, lf_dataset_dir, "warmup_ratoi.*Did you mean 'warmup_ratio'")
