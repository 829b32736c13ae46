"""Catalog datasets of the training stage.

``TrainingFilesDataset`` (``training_files``): every file the training stage writes besides the model, as a
``sft.train.files.TrainingFiles``. They are this dataset's side files (docs/catalog.md §3), written
by the stage while it runs: the LLaMA-Factory YAML (before the launch), the console log (during it), the run
history entry and archive (also for a failed run) and ``runtime_info.output`` in the config (after a
completed run only).

``TrainerLogsDataset`` (``trainer_logs``): what LLaMA-Factory logged in the run's output folder
(``trainer_log.jsonl`` and ``trainer_state.json``'s ``log_history``), for the training curves. Read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from sft.datasets.handles import HandleDataset
from sft.train.files import TrainingFiles
from sft.train.results import read_log_history, read_trainer_log


class TrainingFilesDataset(HandleDataset[TrainingFiles]):
    _written_by = "the training stage"

    def __init__(
        self,
        config_file: str,
        dataset_dir: str,
        training_yaml: str,
        logs_dir: str,
        run_index: str,
        archives_dir: str,
        wandb_dir: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not training_yaml:
            raise DatasetError(
                "training_files.training_yaml is empty: runtime_info.input.training.output_dir has no basename. "
                "Fix: set training.output_dir to a folder name (e.g. my_run) or an absolute path"
            )
        self._handle = TrainingFiles(
            config_file=Path(config_file),
            dataset_dir=Path(dataset_dir),
            training_yaml=Path(training_yaml),
            logs_dir=Path(logs_dir),
            run_index=Path(run_index),
            archives_dir=Path(archives_dir),
            wandb_dir=Path(wandb_dir),
        )
        self.metadata = metadata


@dataclass(frozen=True)
class TrainerLogs:
    run: str  # the output folder's name
    records: list[dict[str, Any]]  # trainer_log.jsonl
    log_history: list[dict[str, Any]]  # trainer_state.json's log_history ([] when absent)


class TrainerLogsDataset(AbstractDataset[None, TrainerLogs]):
    """``output_dir``: the run's output folder (``${cfg:paths.training_output_dir}``)."""

    def __init__(self, output_dir: str, metadata: dict[str, Any] | None = None) -> None:
        self._output_dir = Path(output_dir)
        self.metadata = metadata

    def load(self) -> TrainerLogs:
        log = self._output_dir / "trainer_log.jsonl"
        if not log.is_file():
            raise DatasetError(f"{log} does not exist: the training run wrote no log (did it start?)")
        return TrainerLogs(
            run=self._output_dir.name,
            records=read_trainer_log(log),
            log_history=read_log_history(self._output_dir),
        )

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._output_dir}: LLaMA-Factory writes its logs; they are read-only here")

    def _exists(self) -> bool:
        return (self._output_dir / "trainer_log.jsonl").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"output_dir": str(PurePosixPath(self._output_dir))}
