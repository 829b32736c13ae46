"""Generate the LLaMA-Factory training YAML from config.yaml, and the output-dir safety rules.

The YAML follows the reference's key order (docs/config-contract.md §6.2) so a diff against a reference run
reads naturally; user extras under ``training:`` follow, after validation against LLaMA-Factory's own
argument names. Paths are absolute because LLaMA-Factory resolves ``deepspeed`` and ``dataset_dir``
against the launch cwd. Credentials never enter this mapping: they travel as environment variables.

Output-dir rules (newer reference behaviour, docs/config-contract.md §14 row 1, plus §15.2): LLaMA-Factory
silently *resumes* when ``output_dir`` holds a checkpoint and ``overwrite_output_dir`` is false, and
silently *overwrites* when it is true. sft refuses a non-empty ``output_dir`` unless a resume is
requested (then the YAML has ``overwrite_output_dir: false`` and an explicit checkpoint path) or
overwriting is asked for twice (``overwrite_output_dir: true`` and ``SFT_ALLOW_OVERWRITE_OUTPUT=1``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from sft.config.paths import training_output_dir
from sft.config.schema import RuntimeInput, TrainingConfig
from sft.train.lf_args import check_training_options
from sft.train.results import CHECKPOINT_RE, complete_checkpoints, is_complete_checkpoint

logger = logging.getLogger(__name__)

ALLOW_OVERWRITE_ENV = "SFT_ALLOW_OVERWRITE_OUTPUT"
LOCK_NAME = ".sft-train.lock"
# Files sft itself may leave in an output dir; they do not make it "non-empty".
_IGNORED_ENTRIES = {LOCK_NAME}
_NODE_LOCK_RE = re.compile(
    r"^\.sft-train\.node\d+\.lock$"
)  # multi-node: one lock per node (launch.lock_name)


class TrainingConfigError(ValueError):
    """A training setting that cannot work; the message names the field, the value and the fix."""


class OutputDirError(RuntimeError):
    """The output directory may not be used as configured (non-empty, or another run trains into it)."""


# ----------------------------------------------------------------------------------------- paths


def resolve_output_dir(output_dir: str, root: Path) -> Path:
    """Relative ``training.output_dir`` -> ``<root>/artifacts/model/<basename>``; absolute as-is."""
    try:
        return training_output_dir(output_dir, root)
    except ValueError as exc:
        raise TrainingConfigError(str(exc)) from exc


def _resolve_config_path(value: str, root: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else Path(root).resolve() / path


# ------------------------------------------------------------------------------------- rope / yarn


def native_context(model_dir: Path) -> int | None:
    """The model's native context as LLaMA-Factory computes the YaRN base (model/model_utils/rope.py).

    ``rope_scaling.original_max_position_embeddings`` if present, else ``max_position_embeddings``;
    None when ``model_dir`` is not a local directory with a readable ``config.json``.
    """
    config_path = Path(model_dir) / "config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rope = config.get("rope_scaling") or {}
    base = rope.get("original_max_position_embeddings") if isinstance(rope, dict) else None
    base = base or config.get("max_position_embeddings")
    return int(base) if base else None


def yarn_factor(cutoff_len: int, model_dir: Path) -> float | None:
    """``float(ceil(cutoff_len / base))`` like LLaMA-Factory; None when no scaling happens or unknown."""
    base = native_context(model_dir)
    if base is None or cutoff_len <= base:
        return None
    return float(math.ceil(cutoff_len / base))


def _rope_scaling_value(training: TrainingConfig, model_path: str) -> str | None:
    """The ``rope_scaling`` to emit: only when set and the cutoff exceeds the model's native context."""
    method = training.rope_scaling
    if not method:
        return None
    model_dir = Path(os.path.expanduser(model_path))
    base = native_context(model_dir) if model_dir.is_dir() else None
    if base is None:
        logger.warning(
            "rope_scaling %s kept: the native context of %s is unknown here (not a local model dir with "
            "config.json); LLaMA-Factory decides at load time whether cutoff_len %d needs it",
            method,
            model_path,
            training.cutoff_len,
        )
    elif training.cutoff_len <= base:
        logger.info(
            "rope_scaling %s omitted: cutoff_len %d fits the native context %d of %s",
            method,
            training.cutoff_len,
            base,
            model_path,
        )
        return None
    else:
        factor = math.ceil(training.cutoff_len / base)
        logger.info(
            "rope_scaling %s: cutoff_len %d > native context %d -> factor %.1f (max positions %d)",
            method,
            training.cutoff_len,
            base,
            factor,
            base * factor,
        )
    _check_rope_transformers_version(method)
    return method


def _check_rope_transformers_version(method: str) -> None:
    """transformers 5.x crashes at model load with LLaMA-Factory's rope patch (docs/llamafactory-rules.md §8.2)."""
    try:
        major = int(metadata.version("transformers").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return
    if major >= 5:
        raise TrainingConfigError(
            f"runtime_info.input.training.rope_scaling: {method!r} crashes at model load on transformers "
            f"{metadata.version('transformers')} (LLaMA-Factory writes a float max_position_embeddings and a "
            "rope dict without rope_theta). Fix: use the pinned transformers 4.57.x env, or set rope_scaling: "
            "null and put a complete rope_scaling into the model's config.json"
        )


# ------------------------------------------------------------------------------------------ resume


def resolve_resume_checkpoint(value: str | None, output_dir: Path, root: Path) -> Path | None:
    """The checkpoint to resume from, as an absolute path, or None when no resume is requested.

    ``auto`` = the highest complete ``checkpoint-<step>`` in ``output_dir``. A relative path is looked up
    in ``output_dir`` first (``checkpoint-200``), then against the project root.
    """
    if not value:
        return None
    field = "runtime_info.input.training.resume_from_checkpoint"
    if value.strip().lower() == "auto":
        found = complete_checkpoints(output_dir)
        if not found:
            raise TrainingConfigError(
                f"{field}: 'auto' found no complete checkpoint-<step> in {output_dir}. "
                "Fix: point it at a checkpoint dir, or set it to null to start fresh"
            )
        return found[-1][1]
    candidate = Path(os.path.expanduser(value))
    if not candidate.is_absolute():
        in_output = output_dir / candidate
        candidate = in_output if in_output.exists() else Path(root).resolve() / candidate
    if not is_complete_checkpoint(candidate):
        raise TrainingConfigError(
            f"{field}: {value!r} -> {candidate} is not a complete checkpoint (needs trainer_state.json and "
            "model weights). Fix: use an existing checkpoint-<step> dir, or 'auto'"
        )
    return candidate.resolve()


# ----------------------------------------------------------------------------------- output dir


def output_dir_entries(output_dir: Path) -> list[str]:
    """Names in ``output_dir`` that count as content (sft's own lock files do not)."""
    if not output_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in output_dir.iterdir()
        if p.name not in _IGNORED_ENTRIES and not _NODE_LOCK_RE.match(p.name)
    )


def overwrite_allowed(training_cfg: TrainingConfig, env: Mapping[str, str]) -> bool:
    """Overwriting needs both ``overwrite_output_dir: true`` and ``SFT_ALLOW_OVERWRITE_OUTPUT=1``."""
    return bool(training_cfg.overwrite_output_dir) and env.get(ALLOW_OVERWRITE_ENV, "") == "1"


def check_output_dir(
    output_dir: Path, training_cfg: TrainingConfig, env: Mapping[str, str] | None = None
) -> None:
    """Refuse a non-empty ``output_dir`` unless a resume or an explicit overwrite is requested."""
    env = os.environ if env is None else env
    entries = output_dir_entries(Path(output_dir))
    if not entries:
        return
    if training_cfg.resume_from_checkpoint:
        return
    if overwrite_allowed(training_cfg, env):
        logger.warning("output_dir %s is not empty; overwriting it (%s=1)", output_dir, ALLOW_OVERWRITE_ENV)
        return
    shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
    raise OutputDirError(
        f"runtime_info.input.training.output_dir: {output_dir} is not empty ({shown}); LLaMA-Factory would "
        "silently resume or overwrite it. Fix one of: choose a new output_dir; set "
        "training.resume_from_checkpoint to a checkpoint dir or 'auto' to continue; or set "
        f"overwrite_output_dir: true AND export {ALLOW_OVERWRITE_ENV}=1 to replace the old run"
    )


def remove_stale_checkpoints(output_dir: Path) -> list[Path]:
    """Delete old ``checkpoint-*`` dirs before an explicit overwrite, so none can be handed off later."""
    removed: list[Path] = []
    if not output_dir.is_dir():
        return removed
    for child in sorted(output_dir.iterdir()):
        if child.is_dir() and CHECKPOINT_RE.match(child.name):
            shutil.rmtree(child)
            removed.append(child)
            logger.warning("overwrite: removed stale %s", child)
    return removed


# ------------------------------------------------------------------------------------- the YAML


def _save_strategy(value: str) -> str:
    return "no" if value in ("no", "none") else value


def build_training_args(
    cfg: RuntimeInput,
    *,
    root: Path,
    dataset_dir: Path,
    run_name: str,
    on_cpu: bool,
    wandb_enabled: bool | None = None,
) -> dict[str, Any]:
    """The LLaMA-Factory YAML mapping, in the contract's key order (docs/config-contract.md §6.2).

    ``wandb_enabled`` defaults to ``experiment.wandb_mode != 'disabled'``. Raises TrainingConfigError
    for unknown ``training`` keys, an unusable resume request, or a rope setting that cannot load.
    """
    training = cfg.training
    root = Path(root).resolve()
    errors = check_training_options(training.model_dump(exclude_unset=False))
    if errors:
        raise TrainingConfigError("invalid training options:\n  - " + "\n  - ".join(errors))
    if wandb_enabled is None:
        wandb_enabled = cfg.experiment.wandb_mode != "disabled"
    output_dir = resolve_output_dir(training.output_dir, root)
    resume = resolve_resume_checkpoint(training.resume_from_checkpoint, output_dir, root)
    if resume is not None and training.save_only_model:
        raise TrainingConfigError(
            "runtime_info.input.training.save_only_model: true together with resume_from_checkpoint: "
            "save_only_model checkpoints hold no optimizer/RNG state, so they cannot be resumed. "
            "Fix: set save_only_model: false, or drop resume_from_checkpoint"
        )
    args = {
        **_model_and_data_args(cfg, root, dataset_dir),
        **_output_args(training, output_dir, resume, run_name, wandb_enabled),
        **_optimization_args(training),
        **training.extra_options,
    }
    if on_cpu:
        _adapt_for_cpu(args)
    return args


def _model_and_data_args(cfg: RuntimeInput, root: Path, dataset_dir: Path) -> dict[str, Any]:
    """The model, the stage and the dataset keys, in the contract's order."""
    training = cfg.training
    args: dict[str, Any] = {
        "model_name_or_path": cfg.model.model_name_or_path,
        "trust_remote_code": cfg.model.trust_remote_code,
        "stage": training.stage,
        "do_train": True,
        "finetuning_type": training.finetuning_type,
    }
    if training.deepspeed:
        args["deepspeed"] = str(_resolve_config_path(training.deepspeed, root))
    args["dataset_dir"] = str(Path(dataset_dir).resolve())
    args["dataset"] = cfg.dataset_key
    tokenized = _pretokenized(cfg, dataset_dir)
    if tokenized is not None:  # LLaMA-Factory loads it instead of tokenizing (conversion.pretokenize)
        args["tokenized_path"] = str(tokenized.resolve())
    args["template"] = training.template
    args["cutoff_len"] = training.cutoff_len
    rope = _rope_scaling_value(training, cfg.model.model_name_or_path)
    if rope:
        args["rope_scaling"] = rope
    if training.max_samples is not None:
        args["max_samples"] = training.max_samples
    args["overwrite_cache"] = True
    if training.preprocessing_num_workers is not None:
        args["preprocessing_num_workers"] = training.preprocessing_num_workers
    args["dataloader_num_workers"] = training.dataloader_num_workers
    return args


def _output_args(
    training: TrainingConfig, output_dir: Path, resume: Path | None, run_name: str, wandb_enabled: bool
) -> dict[str, Any]:
    """Output dir, checkpoints, resume and logging keys, in the contract's order."""
    args: dict[str, Any] = {
        "output_dir": str(output_dir),
        "run_name": run_name,
        "logging_steps": training.logging_steps,
    }
    save_strategy = _save_strategy(training.save_strategy)
    if save_strategy != "no":
        args["save_steps"] = training.save_steps
    args["save_strategy"] = save_strategy
    args["plot_loss"] = True
    # Never let LLaMA-Factory decide between resume and overwrite on its own (module docstring):
    # a resume gets an explicit path and overwrite false; anything else starts fresh.
    args["overwrite_output_dir"] = resume is None
    args["save_only_model"] = training.save_only_model
    args["report_to"] = "wandb" if wandb_enabled else "none"
    args["resume_from_checkpoint"] = str(resume) if resume is not None else None
    return args


def _optimization_args(training: TrainingConfig) -> dict[str, Any]:
    """Batch, optimizer, schedule, precision and kernel keys, in the contract's order."""
    args: dict[str, Any] = {
        "per_device_train_batch_size": training.per_device_train_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "learning_rate": training.learning_rate,
        "weight_decay": training.weight_decay,
        "max_grad_norm": training.max_grad_norm,
        "num_train_epochs": training.num_train_epochs,
        "lr_scheduler_type": training.lr_scheduler_type,
    }
    if training.max_steps and training.max_steps > 0:
        args["max_steps"] = training.max_steps
    args["warmup_ratio"] = training.warmup_ratio
    args["bf16"] = training.bf16
    args["ddp_timeout"] = training.ddp_timeout
    args["enable_liger_kernel"] = training.enable_liger_kernel
    args["use_unsloth_gc"] = training.use_unsloth_gc
    args["flash_attn"] = training.flash_attn
    return args


def _pretokenized(cfg: RuntimeInput, dataset_dir: Path) -> Path | None:
    """The convert stage's pre-tokenized dataset, when asked for and made with this run's template/cutoff."""
    if not cfg.conversion.pretokenize:
        return None
    from sft.report.pretokenize import matching_tokenized_path, tokenized_path
    from sft.report.tokens import lf_data_options

    key = {
        "template": cfg.training.template,
        "cutoff_len": cfg.training.cutoff_len,
        "lf_options": lf_data_options(cfg.training.extra_options),
    }
    found = matching_tokenized_path(dataset_dir, cfg.conversion.data_name, key)
    if found is None:
        raise TrainingConfigError(
            f"conversion.pretokenize: true, but {tokenized_path(dataset_dir, cfg.conversion.data_name)} is missing or "
            f"was made for other settings than template={cfg.training.template!r}, cutoff_len={cfg.training.cutoff_len}. "
            "Fix: run `kedro run --pipeline=convert` again (it writes it), or set conversion.pretokenize: false"
        )
    return found


def _adapt_for_cpu(args: dict[str, Any]) -> None:
    """Settings a CPU-only machine needs (docs/llamafactory-rules.md §13.1), each said in a log line."""
    if args.get("bf16") and not args.get("use_cpu"):
        args["use_cpu"] = True
        logger.info(
            "CPU-only machine with bf16: true -> use_cpu: true (LLaMA-Factory refuses bf16 on CPU otherwise)"
        )
    if args.get("use_unsloth_gc"):
        args["use_unsloth_gc"] = False
        logger.warning("CPU-only machine: use_unsloth_gc disabled (its offload moves tensors to 'cuda')")
    if args.get("enable_liger_kernel"):
        args["enable_liger_kernel"] = False
        logger.warning("CPU-only machine: enable_liger_kernel disabled (Liger kernels are Triton/GPU-only)")


def dump_training_yaml(args: Mapping[str, Any]) -> str:
    """YAML text in the mapping's own order (no key sorting), as LLaMA-Factory reads it."""
    return yaml.safe_dump(
        dict(args), sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096
    )
