"""The project's file layout, defined once: every folder the catalog, the nodes, preflight and the dashboard share.

The catalog reaches these through ``${cfg:paths.<key>}`` (sft.config.kedro_bridge.derived_values); Python code
imports the functions below. Paths are relative to the project root; nothing here reads the config file.
"""

from __future__ import annotations

import os
from pathlib import Path

LF_DATA_DIR = Path("artifacts") / "data" / "lf_data"  # LLaMA-Factory's dataset_dir: rows + dataset_info.json
IM_DATA_DIR = Path("artifacts") / "data" / "im_data"  # the intermediate (canonical) rows
HF_DATA_DIR = Path("artifacts") / "data" / "hf_data"  # files fetched from the Hugging Face Hub
INTERMEDIATE_DIR = Path("data") / "02_intermediate"  # conversion cache, stat index, spools
MODEL_OUTPUT_DIR = Path("data") / "07_model_output"  # training_run.json per run
REPORTING_DIR = Path("data") / "08_reporting"  # per dataset / per run reports
TRAINING_CONFIG_DIR = Path("artifacts") / "training_config"  # the generated LLaMA-Factory YAML per run
MODEL_DIR = Path("artifacts") / "model"  # training output_dir for relative names
RUN_INDEX = Path("artifacts") / "index.yaml"  # the training run history
ARCHIVES_DIR = Path("artifacts") / "archives"  # run_NNN/ of failed / interrupted runs
LOGS_DIR = Path("artifacts") / "logs"  # the training console logs
WANDB_RUNS_DIR = Path("artifacts") / "wandb"  # wandb's run folders (WANDB_DIR is its parent)


def lf_data_dir(root: Path | str) -> Path:
    """``<root>/artifacts/data/lf_data``: where the rows and dataset_info.json are written."""
    return Path(root) / LF_DATA_DIR


def lf_json_path(root: Path | str, data_name: str) -> Path:
    """The written LLaMA-Factory file of ``data_name``."""
    return lf_data_dir(root) / f"{data_name}.json"


def conversion_cache_dir(root: Path | str) -> Path:
    """The per-trial conversion cache (``*.trial`` entries, and the stat index in ``trial-index/``)."""
    return Path(root) / INTERMEDIATE_DIR / "conversion_cache"


def spool_dir(root: Path | str) -> Path:
    """Where the conversion's scratch files live: next to the other intermediate data, not in /tmp (often a
    small RAM disk on login nodes)."""
    return Path(root) / INTERMEDIATE_DIR


def report_dir(root: Path | str, name: str) -> Path:
    """``<root>/data/08_reporting/<name>`` (``name``: a data_name or a run_name)."""
    return Path(root) / REPORTING_DIR / name


def training_output_dir(output_dir: str, root: Path | str) -> Path:
    """``training.output_dir``: a relative value -> ``<root>/artifacts/model/<basename>`` (leading folders of a
    relative value are ignored, as in the reference, docs/config-contract.md §3.6); an absolute one as is.
    ValueError when a relative value has no basename."""
    path = Path(os.path.expanduser(str(output_dir)))
    if path.is_absolute():
        return path
    if not path.name:
        raise ValueError(f"runtime_info.input.training.output_dir: {output_dir!r} has no basename")
    return Path(root).resolve() / MODEL_DIR / path.name


def training_yaml_path(output_dir: Path | str, root: Path | str) -> Path:
    """``artifacts/training_config/<basename(output_dir)>.yaml`` (docs/config-contract.md §3.6)."""
    return Path(root).resolve() / TRAINING_CONFIG_DIR / f"{Path(output_dir).name}.yaml"
