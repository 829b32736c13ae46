"""Helpers for the conversion-engine tests: a small generated job, a config, and the real output writers."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from sft.config.loader import load_config
from sft.config.schema import RuntimeInput
from sft.core.results import ConversionResult
from sft.datasets.files import AtomicJSONLinesDataset
from sft.datasets.llamafactory import LlamaFactoryDataset
from sft.engine.harbor import convert_job
from tests.conftest import PROJECT_ROOT
from tests.support.jobgen import generate_job

N_TRIALS = 16
MAX_TURNS = 6
EXCLUSIONS = PROJECT_ROOT / "artifacts" / "data" / "excluded_repos.txt"


def make_job(job_dir: Path, n_trials: int = N_TRIALS) -> Path:
    """A deterministic job with all four scaffolds (resolved/unresolved, excluded repos, sub-agents)."""
    if job_dir.exists():
        shutil.rmtree(job_dir)
    generate_job(job_dir, n_trials=n_trials, max_turns=MAX_TURNS, seed=7, with_truth=False)
    return job_dir


def make_root(root: Path) -> Path:
    """A project root holding its own exclusion list copy (tests may edit it) and the conversion cache."""
    (root / "artifacts" / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy2(EXCLUSIONS, root / "artifacts" / "data" / "excluded_repos.txt")
    return root


def engine_config(**conversion: Any) -> RuntimeInput:
    """The demo profile (auto scaffold, resolved trials, SWE-bench exclusion) with conversion overrides."""
    cfg = load_config(PROJECT_ROOT / "config.demo.yaml").runtime_info.input
    return cfg.model_copy(update={"conversion": cfg.conversion.model_copy(update=conversion)})


def output_bytes(result: ConversionResult, out_dir: Path) -> dict[str, bytes]:
    """Write LF rows, IM rows and rejects with the catalog's own writers and return the files' bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    LlamaFactoryDataset(str(out_dir / "lf.json"), parquet=False).save(result.lf_rows)
    AtomicJSONLinesDataset(str(out_dir / "im.jsonl")).save(result.im_rows)
    AtomicJSONLinesDataset(str(out_dir / "rejects.jsonl")).save(result.rejects)
    return {name: (out_dir / name).read_bytes() for name in ("lf.json", "im.jsonl", "rejects.jsonl")}


def run(
    cfg: RuntimeInput, job: Path, root: Path, out_dir: Path, workers: int = 1
) -> tuple[dict[str, bytes], dict[str, Any]]:
    result = convert_job(cfg, job, root, num_workers=workers, progress=False)
    return output_bytes(result, out_dir), result.funnel


@pytest.fixture(scope="module")
def small_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_job(tmp_path_factory.mktemp("engine_job") / "job")
