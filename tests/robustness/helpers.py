"""Shared pieces of the robustness tests: a conversion config that reads every trial, job copies, and the
accounting check (every trial is in the output or in the rejects, with a reason that names a file).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sft.config.loader import load_config
from sft.config.schema import RuntimeInput
from sft.core.results import ConversionResult
from sft.engine.harbor import convert_job

ROOT = Path(__file__).resolve().parents[2]
DEMO_JOB = ROOT / "data" / "01_raw" / "demo_job"
DEMO_CONFIG = ROOT / "config.demo.yaml"

# Claude Code (Anthropic-shaped proxy log + ATIF), OpenCode (OpenAI-shaped log + ATIF), OpenCode ATIF only.
ANTHROPIC_TRIAL = "acme__widgets-17__tPTpoGp"
OPENAI_TRIAL = "acme__widgets-42__Lb8DCCt"
ATIF_ONLY_TRIAL = "octo__toolkit-8__qsqnasc"
LOG = "litellm-trajectory.jsonl"
ATIF = "trajectory.json"

# Rejects that only the engine's / extractor's last-resort handlers produce: a bug, never a precise reason.
CATCH_ALL_REASONS = frozenset({"internal_error", "unexpected_error"})


def read_everything_config(**conversion: Any) -> RuntimeInput:
    """The demo config, changed so that every trial's logs are actually parsed.

    Why: with the demo's defaults half the trials are dropped on result.json alone (unresolved, excluded
    repos) and a corrupted log in them would never be read, so the damage would not be exercised.
    """
    cfg = load_config(DEMO_CONFIG).input
    settings = {"use_cache": False, "instance_status": "all", "exclude_repos_file": "", **conversion}
    return cfg.model_copy(update={"conversion": cfg.conversion.model_copy(update=settings)})


def copy_job(dest: Path, trials: Iterable[str] | None = None) -> Path:
    """A copy of the demo job (all trials, or only ``trials``) plus its job-level files."""
    dest.mkdir(parents=True, exist_ok=True)
    names = list(trials) if trials is not None else [p.name for p in DEMO_JOB.iterdir() if p.is_dir()]
    for name in names:
        shutil.copytree(DEMO_JOB / name, dest / name, symlinks=True)
    for name in ("config.json", "result.json"):
        shutil.copy2(DEMO_JOB / name, dest / name)
    return dest


TRIAL_MARKERS = ("result.json", "config.json", "agent", "steps")


def trial_dirs(job_dir: Path) -> set[str]:
    """Names of the dirs a user would count as trials: real dirs (no symlinks, no dot-dirs) holding any of
    result.json, config.json, agent/ or steps/. A dir with none of them (say, only verifier/ left) is not
    a trial run by Harbor, whose first act is to write the trial's config.json."""
    return {
        p.name
        for p in job_dir.iterdir()
        if p.is_dir()
        and not p.is_symlink()
        and not p.name.startswith(".")
        and any((p / marker).exists() for marker in TRIAL_MARKERS)
    }


def convert(job_dir: Path, root: Path, cfg: RuntimeInput | None = None, **kwargs: Any) -> ConversionResult:
    return convert_job(
        cfg or read_everything_config(), job_dir, root, num_workers=1, progress=False, **kwargs
    )


def written_trials(result: ConversionResult) -> set[str]:
    return {json.loads(row["_meta"])["trial_name"] for row in result.lf_rows}


def rejected_trials(result: ConversionResult) -> set[str]:
    return {r["trial_name"] for r in result.rejects}


def assert_accounted(result: ConversionResult, expected_trials: set[str]) -> None:
    """Every trial is written or rejected; every reject has a stage, a reason and a detail; no catch-all."""
    seen = written_trials(result) | rejected_trials(result)
    missing = expected_trials - seen
    assert not missing, f"trials neither written nor rejected: {sorted(missing)}"
    for reject in result.rejects:
        assert reject["stage"] and reject["reason"] and reject["detail"], reject
        assert reject["reason"] not in CATCH_ALL_REASONS, f"a bug reached the safety net: {reject}"


def trial_rejects(result: ConversionResult, trial: str) -> list[dict[str, Any]]:
    """The trial-level rejects of ``trial`` (not per-trajectory ones such as dedup)."""
    return [r for r in result.rejects if r["trial_name"] == trial and r.get("trajectory") is None]


def log_lines(path: Path) -> list[bytes]:
    return path.read_bytes().rstrip(b"\n").split(b"\n")
