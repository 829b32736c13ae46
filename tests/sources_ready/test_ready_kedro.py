"""`kedro run --pipeline=convert` with a local_lf source: the same pipelines prepare, register and report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.sources_ready.conftest import sharegpt_row, write_jsonl

pytestmark = pytest.mark.slow

BAD = {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}


def _ready_profile(project: Path, lf_path: Path) -> None:
    config = yaml.safe_load((project / "config.demo.yaml").read_text())
    source = config["runtime_info"]["input"]["source"]
    source.update({"type": "local_lf", "lf_path": str(lf_path), "job_dir": ""})
    config["runtime_info"]["input"]["conversion"].update(
        {"data_name": "ready_demo", "max_instances": 3, "seed": 5}
    )
    (project / "config.ready.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_convert_pipeline_registers_a_local_lf_dataset(
    project_copy: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    # bootstrap_project wants a source dir inside the project; the sft package itself is already importable.
    (project_copy / "src").mkdir(exist_ok=True)
    (project_copy / "artifacts" / "demo").mkdir(parents=True)
    os.symlink(tiny_model_dir, project_copy / "artifacts" / "demo" / "tiny-qwen3")
    source = write_jsonl(project_copy / "inputs" / "mine.jsonl", [sharegpt_row(i) for i in range(6)] + [BAD])
    _ready_profile(project_copy, source)
    monkeypatch.setenv("SFT_CONFIG", "config.ready.yaml")
    monkeypatch.chdir(project_copy)

    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy) as session:
        session.run(pipeline_names=["convert"])

    lf_dir = project_copy / "artifacts" / "data" / "lf_data"
    rows = json.loads((lf_dir / "ready_demo.json").read_text())
    info = json.loads((lf_dir / "dataset_info.json").read_text())
    report = json.loads((project_copy / "data" / "08_reporting" / "ready_demo" / "funnel.json").read_text())
    rejects = (
        (project_copy / "data" / "08_reporting" / "ready_demo" / "rejects.jsonl").read_text().splitlines()
    )
    assert len(rows) == 3
    assert info["ready_demo"] == {
        "file_name": str(lf_dir / "ready_demo.json"),
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
    }
    assert report["funnel"]["rows_found"] == 7 and report["funnel"]["rows_invalid"] == 1
    assert report["selection"]["seed"] == 5 and report["selection"]["selected"] == 3
    assert [json.loads(line)["stage"] for line in rejects] == ["lf_rules"]
