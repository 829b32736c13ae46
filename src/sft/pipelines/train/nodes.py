"""Train with LLaMA-Factory and publish the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from sft.config.loader import load_selected_config
from sft.config.schema import RuntimeInput
from sft.datasets.training import TrainerLogs
from sft.train.files import TrainingFiles


def train_model(
    dataset_registration: dict[str, Any],
    data_check: dict[str, Any],
    training_files: TrainingFiles,
    settings: RuntimeInput,
    project_root: str,
) -> dict[str, Any]:
    """Generate the LLaMA-Factory YAML, launch, and write runtime_info.output (only on success).

    ``data_check`` exists only when the pre-training checks (template fidelity) passed: taking it as an
    input makes training wait for them. ``training_files`` (catalog) names every file the stage writes.
    """
    return _train(training_files, settings, project_root)


def _train(training_files: TrainingFiles, settings: RuntimeInput, project_root: str) -> dict[str, Any]:
    from sft.train import run_training

    cfg = load_selected_config().model_copy(deep=True)
    cfg.runtime_info.input = settings
    return run_training(
        cfg,
        config_path=training_files.config_file,
        root=Path(project_root),
        dataset_dir=training_files.dataset_dir,
        files=training_files,
    )


def wait_for_registered_dataset(settings: RuntimeInput, lf_dir: str) -> dict[str, Any]:
    """Nodes 1.. of a multi-node run: wait (bounded) until node 0 registered the dataset for this run."""
    import os

    from sft.train.multinode import DatasetWaitError, run_token, wait_for_dataset

    token = run_token(os.environ)
    if not token:
        raise DatasetWaitError(
            "multi-node follower without a run id: export SFT_RUN_ID (the same value on every node) or run under "
            "Slurm (SLURM_JOB_ID), so this node waits for this run's dataset and not an older one"
        )
    return wait_for_dataset(
        Path(lf_dir), settings.dataset_key, token, timeout_s=settings.infrastructure.dataset_wait_s
    )


def train_model_follower(
    dataset_ready: dict[str, Any], training_files: TrainingFiles, settings: RuntimeInput, project_root: str
) -> dict[str, Any]:
    """Train on a follower node: the same launch as node 0, once node 0's dataset is ready."""
    del dataset_ready  # a dependency only: training starts after the wait
    return _train(training_files, settings, project_root)


def extract_training_metrics(training_run: dict[str, Any]) -> dict[str, Any]:
    """The metrics part of the run summary, as its own reporting artifact."""
    output = training_run.get("output") or {}
    metrics = (output.get("training_metrics") or {}).get("value") or {}
    return {
        "run_id": training_run.get("run_id"),
        "status": training_run.get("status"),
        "checkpoint_path": (output.get("checkpoint_path") or {}).get("value"),
        **metrics,
    }


def plot_training_curves(training_run: dict[str, Any], trainer_logs: TrainerLogs) -> Figure:
    """Loss, learning rate and grad norm per step. ``training_run`` orders the node after training (the
    catalog loads ``trainer_logs`` when the node starts)."""
    from sft.train.results import curves_figure

    del training_run
    return curves_figure(trainer_logs.records, trainer_logs.log_history, title=trainer_logs.run)
