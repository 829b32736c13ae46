"""The project's file layout, defined once: every folder the catalog, the nodes, preflight and the dashboard share.

The catalog reaches these through ``${cfg:paths.<key>}`` (sft.config.kedro_bridge.derived_values); Python code
imports the functions below. Paths are relative to the project root; nothing here reads the config file.
"""

from __future__ import annotations

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


def lf_data_dir(root: Path | str) -> Path:
    """``<root>/artifacts/data/lf_data``: where the rows and dataset_info.json are written."""
    return Path(root) / LF_DATA_DIR


def lf_json_path(root: Path | str, data_name: str) -> Path:
    """The written LLaMA-Factory file of ``data_name``."""
    return lf_data_dir(root) / f"{data_name}.json"


def report_dir(root: Path | str, name: str) -> Path:
    """``<root>/data/08_reporting/<name>`` (``name``: a data_name or a run_name)."""
    return Path(root) / REPORTING_DIR / name
