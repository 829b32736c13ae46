"""Deriving runtime_info.output from a run directory laid out as LLaMA-Factory writes it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from sft.train.results import (
    RunResultsError,
    collect_results,
    latest_complete_checkpoint,
    plot_training_curves,
)


def _checkpoint(run: Path, step: int, *, state: bool = True, weights: bool = True) -> Path:
    directory = run / f"checkpoint-{step}"
    directory.mkdir(parents=True)
    if state:
        (directory / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if weights:
        (directory / "model.safetensors").write_bytes(b"w")
    return directory


def _run_dir(tmp_path: Path, global_step: int = 10) -> Path:
    run = tmp_path / "artifacts" / "model" / "run"
    run.mkdir(parents=True)
    (run / "train_results.json").write_text(
        json.dumps({"epoch": 1.0, "train_loss": 2.5, "train_runtime": 12.25, "train_steps_per_second": 0.8})
    )
    history = [
        {"step": s, "loss": 3.0 - s / 10, "grad_norm": 1.0 + s, "learning_rate": 1e-4, "epoch": s / 10}
        for s in range(1, global_step + 1)
    ]
    (run / "trainer_state.json").write_text(json.dumps({"global_step": global_step, "log_history": history}))
    lines = [
        {"current_steps": s, "total_steps": global_step, "loss": 3.0 - s / 10, "lr": 1e-4 * s}
        for s in range(1, global_step + 1)
    ]
    lines.append(
        {"current_steps": global_step, "total_steps": global_step, "epoch": 1.0}
    )  # final line: no loss
    (run / "trainer_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "training_loss.png").write_bytes(b"png")
    (run / "model.safetensors").write_bytes(b"final")
    return run


def test_output_shape_and_values(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    _checkpoint(run, 5)
    log = tmp_path / "artifacts" / "logs" / "run_20260101_000000.log"
    out = collect_results(run, log_path=log, wandb_run_id="abcd1234")
    assert out == {
        "checkpoint_path": {
            "description": "Path to the latest trained model checkpoint",
            "value": str(run / "checkpoint-5"),
        },
        "artifacts": {
            "train_results": str(run / "train_results.json"),
            "train_loss_plot": str(run / "training_loss.png"),
            "training_log": str(log),
        },
        "training_curves": {
            "description": "WandB run id with loss, learning rate, and token metrics",
            "value": "abcd1234",
        },
        "training_metrics": {
            "description": "Final training metrics from LLaMA-Factory",
            "value": {
                "final_loss": 2.5,
                "train_runtime": 12.25,
                "total_steps": 10,
                "last_step_loss": pytest.approx(2.0),
            },
        },
    }


def test_highest_complete_checkpoint_wins_not_the_newest_mtime(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, global_step=10)
    newest_mtime = _checkpoint(run, 4)
    _checkpoint(run, 10)
    _checkpoint(run, 8, state=False)  # partial: weights, no trainer_state.json
    _checkpoint(run, 9, weights=False)  # partial: no weights
    _checkpoint(run, 200)  # stale, from an older run into the same dir: beyond this run's global_step
    os.utime(run / "checkpoint-10", (1, 1))
    os.utime(newest_mtime, None)
    out = collect_results(run, log_path=None, wandb_run_id=None)
    assert out["checkpoint_path"]["value"] == str(run / "checkpoint-10")
    assert out["training_curves"]["value"] is None
    assert latest_complete_checkpoint(run) == run / "checkpoint-200"


def test_sharded_checkpoint_needs_every_shard(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    sharded = _checkpoint(run, 6, weights=False)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    (sharded / "model-00001-of-00002.safetensors").write_bytes(b"1")
    _checkpoint(run, 3)
    assert collect_results(run, log_path=None, wandb_run_id=None)["checkpoint_path"]["value"] == str(
        run / "checkpoint-3"
    )
    (sharded / "model-00002-of-00002.safetensors").write_bytes(b"2")
    assert collect_results(run, log_path=None, wandb_run_id=None)["checkpoint_path"]["value"] == str(sharded)


def test_no_checkpoint_falls_back_to_the_run_dir(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    assert collect_results(run, log_path=None, wandb_run_id=None)["checkpoint_path"]["value"] == str(run)


def test_a_run_without_train_results_is_not_a_result(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    (run / "train_results.json").unlink()
    with pytest.raises(RunResultsError, match="train_results.json: missing"):
        collect_results(run, log_path=None, wandb_run_id=None)


def test_plot_has_loss_lr_and_grad_norm(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, global_step=6)
    figure = plot_training_curves(run / "trainer_log.jsonl")
    assert isinstance(figure, Figure)
    axes = figure.get_axes()
    assert [ax.get_title() for ax in axes] == ["training loss", "learning rate", "grad norm"]
    assert [len(ax.get_lines()[0].get_xdata()) for ax in axes] == [6, 6, 6]
    assert list(axes[2].get_lines()[0].get_ydata()) == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    (run / "trainer_state.json").unlink()
    figure = plot_training_curves(run / "trainer_log.jsonl")
    assert not figure.get_axes()[2].get_lines()  # "no data" panel instead of a failure
    figure.savefig(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
