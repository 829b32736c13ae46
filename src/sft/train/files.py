"""Every file the training stage reads or writes besides the model's output folder, in one place.

In a Kedro run the catalog's ``training_files`` entry (sft.datasets.training) builds this from
``${cfg:paths.*}``; ``TrainingFiles.under`` gives the same files for library callers. The training stage writes
them itself because they must exist at points a node's return value cannot reach: the YAML before
LLaMA-Factory starts, the console log while it runs, the history entry and archive also when the run fails
(and the node raises), and ``runtime_info.output`` only after a completed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sft.config.paths import (
    ARCHIVES_DIR,
    LOGS_DIR,
    RUN_INDEX,
    WANDB_RUNS_DIR,
    lf_data_dir,
    training_yaml_path,
)


@dataclass(frozen=True)
class TrainingFiles:
    config_file: Path  # the config: archived with each run; runtime_info.output written back on success
    dataset_dir: Path  # LLaMA-Factory's dataset_dir (the rows and dataset_info.json; read by LLaMA-Factory)
    training_yaml: Path  # the generated LLaMA-Factory YAML
    logs_dir: Path  # <run>_<UTC stamp>.log: the console output of each launch
    run_index: Path  # artifacts/index.yaml: one entry per run, successful or not
    archives_dir: Path  # run_NNN/: the config, YAML, log tail and versions of each run
    wandb_dir: Path  # wandb's {offline-,}run-<stamp>-<id>/ folders (written by wandb in the training process)

    @classmethod
    def under(
        cls, root: Path, *, config_file: Path, output_dir: Path, dataset_dir: Path | None = None
    ) -> TrainingFiles:
        """The project's files under ``root`` (sft.config.paths), as the catalog resolves them."""
        root = Path(root).resolve()
        return cls(
            config_file=Path(config_file),
            dataset_dir=Path(dataset_dir) if dataset_dir is not None else lf_data_dir(root),
            training_yaml=training_yaml_path(output_dir, root),
            logs_dir=root / LOGS_DIR,
            run_index=root / RUN_INDEX,
            archives_dir=root / ARCHIVES_DIR,
            wandb_dir=root / WANDB_RUNS_DIR,
        )
