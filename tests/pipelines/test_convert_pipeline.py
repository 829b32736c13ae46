"""`kedro run --pipeline=convert` on the demo profile: outputs, accounting, registration, idempotence."""

from __future__ import annotations

import json
from pathlib import Path

from tests.pipelines.conftest import run_session


def _outputs(project: Path) -> dict[str, Path]:
    lf = project / "artifacts" / "data" / "lf_data"
    rep = project / "data" / "08_reporting" / "demo_agent_sft"
    return {
        "lf": lf / "demo_agent_sft.json",
        "parquet": lf / "demo_agent_sft.parquet",
        "info": lf / "dataset_info.json",
        "im": project / "artifacts" / "data" / "im_data" / "demo_agent_sft.jsonl",
        "rejects": rep / "rejects.jsonl",
        "funnel": rep / "funnel.json",
    }


def test_convert_pipeline_writes_registers_and_accounts_for_every_trial(demo_project: Path) -> None:
    run_session(demo_project, "convert")
    out = _outputs(demo_project)
    for path in out.values():
        assert path.is_file(), path
    rows = json.loads(out["lf"].read_text())
    report = json.loads(out["funnel"].read_text())
    rejects = [json.loads(line) for line in out["rejects"].read_text().splitlines()]
    assert report["funnel"]["rows_written"] == len(rows) > 0
    assert len(out["im"].read_text().splitlines()) == len(rows)
    info = json.loads(out["info"].read_text())
    assert info["demo_agent_sft"]["file_name"] == "demo_agent_sft.json"
    assert info["demo_agent_sft"]["formatting"] == "sharegpt"
    # accounting: every trial dir is in the output or in the rejects file with a reason
    trials = {p.name for p in (demo_project / "data" / "01_raw" / "demo_job").iterdir() if p.is_dir()}
    written = {json.loads(r["_meta"])["trial_name"] for r in rows}
    rejected = {r["trial_name"] for r in rejects}
    assert trials == written | rejected
    assert all(r["reason"] and r["stage"] for r in rejects)
    # the excluded SWE-bench repos never reach the output
    assert not any(
        json.loads(r["_meta"])["repo"] in {"django/django", "astropy/astropy", "sympy/sympy"} for r in rows
    )
    # model turns: the demo's 67 model turns (16 planned + 6 ATIF-only shape trials), all in the rows but
    # open-code's title-generator calls, the aborted final responses (repaired) and terminus-2's rebuilt ATIF
    turns = report["model_turns"]
    assert turns["output"] == sum(
        1 for r in rows for t in r["conversations"] if t["from"] in ("gpt", "function_call")
    )
    assert (turns["source"], turns["output"], turns["lost"]) == (
        67,
        61,
        {"extract:side_call": 2, "parse:rebuilt_atif": 2, "repair:aborted_empty_response": 2},
    )


def test_convert_is_idempotent_and_params_override(demo_project: Path) -> None:
    run_session(demo_project, "convert")
    out = _outputs(demo_project)
    first = out["lf"].read_bytes()
    run_session(demo_project, "convert")
    assert out["lf"].read_bytes() == first
    run_session(demo_project, "convert", runtime_params={"conversion": {"max_instances": 2}})
    report = json.loads(out["funnel"].read_text())
    assert report["funnel"]["instances_selected"] == 2
    assert report["selection"]["seed"] == 42
    rows = json.loads(out["lf"].read_text())
    assert len({json.loads(r["_meta"])["instance_id"] for r in rows}) == 2
    turns = report["model_turns"]
    assert turns["lost"]["max_instances:not_selected"] > 0 and turns["source"] == 67
