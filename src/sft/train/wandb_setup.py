"""Weights & Biases settings for the trainer's environment (docs/config-contract.md §3.7).

The run id is chosen here, before launch, and exported as ``WANDB_RUN_ID``: the id in
``runtime_info.output.training_curves`` is then exactly the run this training wrote, not "the newest
wandb directory" (which can belong to another run). ``WANDB_DIR=<root>/artifacts`` puts the runs under
``artifacts/wandb/`` (wandb adds the ``wandb/`` level itself).
"""

from __future__ import annotations

import logging
import secrets
import string
from pathlib import Path

from sft.config.credentials import Credentials
from sft.config.paths import WANDB_RUNS_DIR
from sft.config.schema import RuntimeInput

logger = logging.getLogger(__name__)

RUN_ID_ALPHABET = string.ascii_lowercase + string.digits  # what wandb's own generate_id uses
RUN_ID_LENGTH = 8
# Removed from the trainer's environment when wandb is disabled, so nothing reaches wandb by accident.
WANDB_VARS_UNSET_WHEN_DISABLED = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_ID", "WANDB_RESUME")


class WandbConfigError(ValueError):
    """The wandb settings cannot work (e.g. online without a key)."""


def new_wandb_run_id() -> str:
    """A fresh 8-character run id in wandb's alphabet."""
    return "".join(secrets.choice(RUN_ID_ALPHABET) for _ in range(RUN_ID_LENGTH))


def wandb_run_id_for(cfg: RuntimeInput) -> str | None:
    """``experiment.wandb_run_id`` (resume that run), a new id, or None when wandb is disabled."""
    if cfg.experiment.wandb_mode == "disabled":
        return None
    return cfg.experiment.wandb_run_id or new_wandb_run_id()


def wandb_env(
    cfg: RuntimeInput,
    root: Path,
    credentials: Credentials,
    *,
    run_id: str | None = None,
    wandb_dir: Path | None = None,
) -> dict[str, str]:
    """Variables to set for the trainer. For ``disabled`` it is empty; also unset
    ``WANDB_VARS_UNSET_WHEN_DISABLED`` (see ``wandb_unset_vars``).

    ``run_id`` defaults to ``wandb_run_id_for(cfg)``; pass the id you will record so both agree.
    ``wandb_dir``: where wandb writes its runs (the catalog's ``training_files``; ``<root>/artifacts/wandb``).
    """
    mode = cfg.experiment.wandb_mode
    if mode == "disabled":
        return {}
    key = credentials.wandb_api_key
    if mode == "online" and not key:
        raise WandbConfigError(
            "runtime_info.input.experiment.wandb_mode: 'online' needs an API key: export WANDB_API_KEY "
            "(or set credentials.wandb_api_key / conf/local/credentials.yml), or use offline / disabled"
        )
    runs_dir = Path(wandb_dir) if wandb_dir is not None else Path(root).resolve() / WANDB_RUNS_DIR
    runs_dir.mkdir(parents=True, exist_ok=True)  # wandb needs WANDB_DIR to exist
    env = {
        "WANDB_MODE": mode,
        "WANDB_DIR": str(runs_dir.parent),  # wandb writes into <WANDB_DIR>/wandb
        "WANDB_PROJECT": cfg.experiment.wandb_project,
        "WANDB_RUN_ID": run_id or wandb_run_id_for(cfg) or new_wandb_run_id(),
    }
    if cfg.experiment.wandb_run_id:
        env["WANDB_RESUME"] = "allow"
    if key:
        env["WANDB_API_KEY"] = key
    return env


def wandb_unset_vars(cfg: RuntimeInput) -> tuple[str, ...]:
    """Variables to remove from the inherited environment (only when wandb is disabled)."""
    return WANDB_VARS_UNSET_WHEN_DISABLED if cfg.experiment.wandb_mode == "disabled" else ()


def find_wandb_run_dir(root: Path, run_id: str, *, wandb_dir: Path | None = None) -> Path | None:
    """``artifacts/wandb/{offline-,}run-<stamp>-<run_id>`` (newest when a resumed id has several)."""
    base = Path(wandb_dir) if wandb_dir is not None else Path(root).resolve() / WANDB_RUNS_DIR
    candidates = [
        p
        for pattern in (f"wandb/*run-*-{run_id}", f"*run-*-{run_id}")
        for p in base.glob(pattern)
        if p.is_dir() and not p.is_symlink()
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.name.split("-")[-2] if p.name.count("-") >= 2 else "")
