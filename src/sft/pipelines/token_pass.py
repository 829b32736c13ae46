"""Pieces of the single token pass that both the convert pipeline (which runs it) and the report pipeline (which
reads its hand-over) use: the model's tokenizer, the keys token counts depend on.

Not nodes: the pipelines' node modules import these, never each other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sft.config.schema import RuntimeInput
from sft.report.tokens import TokenizerLoad, lf_data_options, load_tokenizer

logger = logging.getLogger(__name__)


def model_tokenizer_path(settings: RuntimeInput, project_root: str | None) -> str:
    """model.model_name_or_path; a relative path that exists under the project root is resolved there."""
    raw = settings.model.model_name_or_path
    if project_root and not Path(raw).is_absolute() and (Path(project_root) / raw).exists():
        return str(Path(project_root) / raw)
    return raw


def load_model_tokenizer(settings: RuntimeInput, project_root: str | None) -> TokenizerLoad:
    loaded = load_tokenizer(
        model_tokenizer_path(settings, project_root), trust_remote_code=settings.model.trust_remote_code
    )
    if not loaded.ok:
        logger.warning("WARN %s", loaded.error)
    return loaded


def lf_options_of(settings: RuntimeInput) -> dict[str, Any]:
    return lf_data_options(settings.training.extra_options)


def dataset_entry_of(conversion_report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The dataset_info.json entry the rows are registered with (ready-made data may use other columns / tags)."""
    entry = ((conversion_report or {}).get("registration") or {}).get("entry")
    return entry if isinstance(entry, dict) else None


def pass_workers(settings: RuntimeInput) -> int | None:
    """conversion.num_workers for the token pass (0 = one per core)."""
    return settings.conversion.num_workers or None


def pretokenized_key(
    settings: RuntimeInput, project_root: str | None, entry: dict[str, Any] | None
) -> dict[str, Any]:
    """What a pre-tokenized dataset depends on; train/yaml_gen only uses one whose key matches the run."""
    return {
        "template": settings.training.template,
        "cutoff_len": settings.training.cutoff_len,
        "lf_options": lf_options_of(settings),
        "tokenizer": model_tokenizer_path(settings, project_root),
        "dataset_entry": entry,
    }


def token_count_key(
    settings: RuntimeInput, project_root: str | None, entry: dict[str, Any] | None
) -> dict[str, Any]:
    """Everything token counts depend on besides the rows: if any differs, counts are not reused."""
    path = model_tokenizer_path(settings, project_root)
    files = {}
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        candidate = Path(path) / name
        if candidate.is_file():
            stat = candidate.stat()
            files[name] = [stat.st_size, stat.st_mtime_ns]
    return {
        "tokenizer": path,
        "tokenizer_files": files,
        "template": settings.training.template,
        "cutoff_len": settings.training.cutoff_len,
        "lf_options": lf_options_of(settings),
        "dataset_entry": entry,
    }
