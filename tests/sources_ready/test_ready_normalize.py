"""conversion.normalize_ready_data: every layout becomes the project's own LF rows (conversations/from/value +
system + tools string), invalid rows go to the rejects, secrets are scrubbed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from sft.config.credentials import Credentials
from sft.core.canonical import Trajectory
from sft.engine.ready import prepare_local_file
from sft.rules.lf_rules import check_lf_row
from sft.rules.render import dataset_info_entry, render_lf_row
from sft.rules.validate import repair_and_validate
from tests.convert.builders import assistant, call, system, tool, traj, user
from tests.sources_ready.conftest import TOOLS_JSON, openai_row, role_content_row, sharegpt_row, write_json

OUR_COLUMNS = dataset_info_entry("x")["columns"]
PUBLIC_COLUMNS = ("conversations", "system", "tools")


def _shapes() -> list[Trajectory]:
    raw = [
        traj(system(), user(), assistant(calls=[call(id="a")]), tool("a.py", id="a"), assistant("Done.")),
        traj(
            system(),
            user(),
            assistant(
                reasoning="Both at once.", calls=[call(id="a"), call("read_file", {"path": "x"}, id="b")]
            ),
            tool("r1", id="a"),
            tool("r2", id="b"),
            assistant("Fine.", reasoning="All read."),
        ),
        traj(
            system(),
            user(),
            assistant("Let me look.", reasoning="plan", calls=[call(id="a")]),
            tool(id="a"),
            assistant("Twice.", calls=[call(id="b"), call(id="c")]),
            tool(id="b"),
            tool(id="c"),
            assistant("ok"),
        ),
        traj(user(), assistant("no tools here"), tools=[]),
    ]
    out = []
    for index, item in enumerate(raw):
        repaired, issues = repair_and_validate(item, drop_tool_errors=False)
        assert repaired is not None, issues
        out.append(
            repaired.model_copy(update={"meta": repaired.meta.model_copy(update={"trajectory_index": index})})
        )
    return out


def test_our_own_rows_round_trip_unchanged(tmp_path: Path, proj: Path, local_settings: Any) -> None:
    rendered = [render_lf_row(t, keep_reasoning=True) for t in _shapes()]
    path = write_json(tmp_path / "ours.json", rendered)
    settings = local_settings(path, normalize_ready_data=True, keep_reasoning=True)
    result = prepare_local_file(path, settings, proj, credentials=Credentials())

    assert result.rejects == []
    assert [{k: r[k] for k in PUBLIC_COLUMNS} for r in result.lf_rows] == [
        {k: r[k] for k in PUBLIC_COLUMNS} for r in rendered
    ]
    assert [r["_instance_id"] for r in result.lf_rows] == ["django__django-12345"] * 4
    assert [json.loads(r["_meta"])["extra"]["ready_row"] for r in result.lf_rows] == [0, 1, 2, 3]
    assert len(result.im_rows) == 4 and len(result.kept) == 4
    assert result.funnel["registration"]["entry"] == dataset_info_entry(
        str(proj / "artifacts" / "data" / "lf_data" / "ready_test.json")
    )
    assert result.funnel["registration"]["registered"] == "normalized_copy"


def test_openai_messages_become_native_sharegpt(tmp_path: Path, proj: Path, local_settings: Any) -> None:
    path = write_json(tmp_path / "oa.json", [openai_row(0)])
    result = prepare_local_file(
        path, local_settings(path, normalize_ready_data=True), proj, credentials=Credentials()
    )
    row = result.lf_rows[0]
    assert row["conversations"] == [
        {"from": "human", "value": "task 0"},
        {
            "from": "function_call",
            "value": 'Let me look.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls 0"}}\n</tool_call>',
        },
        {"from": "observation", "value": "out 0"},
        {"from": "gpt", "value": "done 0"},
    ]
    assert row["system"] == "You are an agent."
    assert json.loads(row["tools"]) == json.loads(TOOLS_JSON)
    assert check_lf_row(row, columns=OUR_COLUMNS) == []
    assert result.funnel["format"]["layout"] == "openai_messages"
    assert not any("'openai' converter" in w for w in result.funnel["warnings"])


def test_parallel_sharegpt_results_are_split_back_per_call(
    tmp_path: Path, proj: Path, local_settings: Any
) -> None:
    calls = [{"name": "bash", "arguments": {"command": "a"}}, {"name": "bash", "arguments": {"command": "b"}}]
    row = {
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": "function_call", "value": json.dumps(calls)},
            {"from": "observation", "value": "ra\n</tool_response>\n<tool_response>\nrb"},
            {"from": "gpt", "value": "done"},
        ],
        "system": "s",
        "tools": TOOLS_JSON,
    }
    path = write_json(tmp_path / "par.json", [row])
    result = prepare_local_file(
        path, local_settings(path, normalize_ready_data=True), proj, credentials=Credentials()
    )
    assert [m.content for m in result.kept[0].messages if m.role == "tool"] == ["ra", "rb"]
    assert result.lf_rows[0]["conversations"] == row["conversations"]


def test_role_content_rows_become_human_gpt(tmp_path: Path, proj: Path, local_settings: Any) -> None:
    path = write_json(tmp_path / "rc.json", [role_content_row(0)])
    result = prepare_local_file(
        path, local_settings(path, normalize_ready_data=True), proj, credentials=Credentials()
    )
    row = result.lf_rows[0]
    assert [t["from"] for t in row["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert row["system"] == "You are an agent." and row["tools"] == ""


def test_invalid_rows_are_dropped_into_the_rejects_by_stage(
    tmp_path: Path, proj: Path, local_settings: Any
) -> None:
    two_calls = json.dumps([{"name": "bash", "arguments": {}}, {"name": "bash", "arguments": {}}])
    unsplittable = {
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": "function_call", "value": two_calls},
            {"from": "observation", "value": "one blob"},
            {"from": "gpt", "value": "a"},
        ]
    }
    orphan = {
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": "gpt", "value": "a"},
            {"from": "observation", "value": "stray"},
            {"from": "gpt", "value": "b"},
        ]
    }
    broken = {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}
    path = write_json(tmp_path / "bad.json", [sharegpt_row(0), unsplittable, orphan, broken])
    result = prepare_local_file(
        path, local_settings(path, normalize_ready_data=True), proj, credentials=Credentials()
    )

    assert len(result.lf_rows) == 1
    assert {r["trial_name"]: (r["stage"], r["reason"]) for r in result.rejects} == {
        "bad#row1": ("normalize", "observation_split_mismatch"),
        "bad#row2": ("validate", "orphan_tool_result"),
        "bad#row3": ("lf_rules", "invalid_role_tag"),
    }
    funnel = result.funnel["funnel"]
    assert (funnel["rows_invalid"], funnel["rows_normalize_rejected"], funnel["rows_written"]) == (1, 2, 1)


def test_secrets_are_scrubbed_when_normalising(tmp_path: Path, proj: Path, local_settings: Any) -> None:
    key = "sk-ant-" + "A1b2C3d4" * 4
    row = sharegpt_row(0)
    row["conversations"][2]["value"] = f"ANTHROPIC_API_KEY={key}"
    path = write_json(tmp_path / "sec.json", [row])
    result = prepare_local_file(
        path, local_settings(path, normalize_ready_data=True), proj, credentials=Credentials()
    )
    assert key not in json.dumps(result.lf_rows) and key not in json.dumps(result.im_rows)
    assert result.lf_rows[0]["conversations"][2]["value"] == "ANTHROPIC_API_KEY=[REDACTED:anthropic]"
    assert result.funnel["secrets_redacted"] == {"anthropic": 1}

    kept = prepare_local_file(
        path,
        local_settings(path, normalize_ready_data=True, scrub_secrets=False),
        proj,
        credentials=Credentials(),
    )
    assert key in kept.lf_rows[0]["conversations"][2]["value"]


def test_reasoning_follows_the_template_policy_and_is_reported(
    tmp_path: Path, proj: Path, local_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    row = sharegpt_row(0)
    row["conversations"][3]["value"] = "<think>\nwhy\n</think>\n\ndone 0"
    path = write_json(tmp_path / "think.json", [row])
    with caplog.at_level(logging.WARNING, logger="sft.engine.ready"):
        dropped = prepare_local_file(
            path, local_settings(path, normalize_ready_data=True), proj, credentials=Credentials()
        )
    assert dropped.lf_rows[0]["conversations"][3]["value"] == "done 0"
    assert dropped.funnel["reasoning"] == {
        "turns_with_reasoning": 1,
        "kept": False,
        "template": "qwen3_nothink",
    }
    assert "carry <think> reasoning, which the normalised rows drop" in caplog.text

    kept = prepare_local_file(
        path,
        local_settings(path, normalize_ready_data=True, keep_reasoning=True),
        proj,
        credentials=Credentials(),
    )
    assert kept.lf_rows[0]["conversations"][3]["value"] == "<think>\nwhy\n</think>\n\ndone 0"


def test_validation_repairs_are_counted_by_kind_as_for_harbor_jobs(
    tmp_path: Path, proj: Path, local_settings: Any
) -> None:
    """funnel.repairs holds kind -> count, the rows' own ``meta.extra["repairs"]`` summed (not one per row)."""
    row = sharegpt_row(0)
    call_turn, _observation = row["conversations"][1:3]
    row["conversations"][1:3] = [call_turn, {"from": "observation", "value": "(empty)"}] * 2
    path = write_json(tmp_path / "empty.json", [row, sharegpt_row(1)])
    result = prepare_local_file(
        path, local_settings(path, normalize_ready_data=True), proj, credentials=Credentials()
    )
    assert result.funnel["funnel"]["rows_written"] == 2
    assert result.funnel["repairs"] == {"empty_tool_output": 2, "filled_tool_call_ids": 3}
    assert [r["conversations"][2]["value"] for r in result.lf_rows] == ["", "out 1"]
