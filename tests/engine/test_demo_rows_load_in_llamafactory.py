"""The converted demo job (every agent and shape it holds, every trial read) loads in LLaMA-Factory 0.9.5 with
zero dropped or skipped rows, for ``qwen3`` and ``qwen3_nothink`` (issue 13: the repairs produce rows
LLaMA-Factory can represent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft.engine.harbor import convert_job
from tests.conftest import PROJECT_ROOT
from tests.convert.test_convert_lf_load import _Collect, load_with_llamafactory, write_dataset
from tests.engine.conftest import engine_config, make_root

DEMO_JOB = PROJECT_ROOT / "data" / "01_raw" / "demo_job"


@pytest.mark.parametrize("template_name", ["qwen3", "qwen3_nothink"])
def test_demo_job_rows_load_without_drops(tmp_path: Path, tiny_model_dir: Path, template_name: str) -> None:
    cfg = engine_config(
        use_cache=False, instance_status="all", keep_exception_trials=True, exclude_repos_file=""
    )
    result = convert_job(cfg, DEMO_JOB, make_root(tmp_path / "root"), num_workers=1, progress=False)
    rows = list(result.lf_rows)
    scaffolds = {t.meta.scaffold for t in result.kept}
    assert {
        "claude-code",
        "open-code",
        "openhands-sdk",
        "terminus2",
        "codex",
        "openhands",
        "gemini-cli",
    } <= scaffolds
    repairs = result.funnel["repairs"]
    assert {"merged_system_messages", "trimmed_aborted_final_turn", "paired_result_without_id"} <= set(
        repairs
    )
    write_dataset(tmp_path / "data", rows)
    with _Collect() as logs:
        dataset, _ = load_with_llamafactory(tmp_path, tiny_model_dir, template_name)
    assert len(dataset) == len(rows)
    assert "Skipping this abnormal example" not in logs.text()
    assert "Dropped invalid example" not in logs.text()
