"""LLaMA-Factory's own argument names, so a typo under ``training:`` fails before launch.

LLaMA-Factory parses the YAML with ``HfArgumentParser`` and rejects unknown keys, but only after the
launcher, torchrun and the imports have run (tens of seconds on a GPU node, minutes in a queue). We read
the same dataclasses it parses (``llamafactory.hparams``: model, data, training = transformers'
``Seq2SeqTrainingArguments`` plus LLaMA-Factory's additions, finetuning, generating) and check up front.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import subprocess
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The dataclasses `llamafactory-cli train` parses (llamafactory/hparams/parser.py: _TRAIN_ARGS).
_ARG_CLASSES = (
    "ModelArguments",
    "DataArguments",
    "TrainingArguments",
    "FinetuningArguments",
    "GeneratingArguments",
)

# Keys sft derives from other config sections; setting them under `training:` would silently fight
# with that section, so they are refused with a pointer to the right place.
MANAGED_KEYS: dict[str, str] = {
    "model_name_or_path": "runtime_info.input.model.model_name_or_path",
    "trust_remote_code": "runtime_info.input.model.trust_remote_code",
    "dataset": "runtime_info.input.dataset.name (or conversion.data_name)",
    "dataset_dir": "the registered dataset (artifacts/data/lf_data), set by sft",
    "run_name": "runtime_info.input.experiment.run_name",
    "report_to": "runtime_info.input.experiment.wandb_mode",
    "do_train": "always true, set by sft",
}

_PROBE = (
    "import dataclasses, json\n"
    "from llamafactory import hparams\n"
    f"names = sorted({{f.name for c in {_ARG_CLASSES!r} for f in dataclasses.fields(getattr(hparams, c))}})\n"
    "print(json.dumps(names))\n"
)


def _names_in_process() -> frozenset[str]:
    from llamafactory import hparams

    names: set[str] = set()
    for class_name in _ARG_CLASSES:
        names |= {field.name for field in dataclasses.fields(getattr(hparams, class_name))}
    return frozenset(names)


def _names_from_interpreter(python: Path) -> frozenset[str]:
    """Ask the training env's interpreter (used when this process cannot import llamafactory)."""
    proc = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(
            f"cannot read LLaMA-Factory's argument names with {python}: {tail[0]}. "
            "Fix: run scripts/install_env.sh so the training env has llamafactory installed."
        )
    return frozenset(json.loads(proc.stdout.strip().splitlines()[-1]))


@lru_cache(maxsize=4)
def _cached_names(python: str | None) -> frozenset[str]:
    if python is None:
        return _names_in_process()
    return _names_from_interpreter(Path(python))


def lf_argument_names(python: Path | None = None) -> set[str]:
    """Every key ``llamafactory-cli train`` accepts in its YAML (cached per interpreter).

    Imports llamafactory in this process (~8 s once); when that is not installed here and ``python``
    names the training env's interpreter, the names are read through that interpreter instead.
    """
    try:
        return set(_cached_names(None))
    except ImportError:
        if python is None or Path(python).resolve() == Path(sys.executable).resolve():
            raise
        logger.info("llamafactory is not importable here; reading its argument names through %s", python)
        return set(_cached_names(str(python)))


def _did_you_mean(key: str, names: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(names), n=3, cutoff=0.6)
    if close:
        return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return (
        " See LLaMA-Factory's hparams (model/data/training/finetuning/generating arguments) for valid names."
    )


def check_training_options(options: Mapping[str, Any], *, python: Path | None = None) -> list[str]:
    """Errors for keys under ``training:`` that LLaMA-Factory would reject or that sft sets itself.

    Returns an empty list when every key is a valid LLaMA-Factory argument. Each message names the
    field, the bad key and the fix (a close match when there is one).
    """
    names = lf_argument_names(python)
    errors: list[str] = []
    for key in options:
        key_str = str(key)
        if key_str in MANAGED_KEYS:
            errors.append(
                f"runtime_info.input.training.{key_str}: set by sft from {MANAGED_KEYS[key_str]}; "
                "remove it from training"
            )
        elif key_str not in names:
            errors.append(
                f"runtime_info.input.training.{key_str}: not a LLaMA-Factory argument "
                f"(llamafactory-cli would reject it).{_did_you_mean(key_str, names)}"
            )
    return errors
