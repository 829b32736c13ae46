"""The template fidelity check: correct rows pass for qwen3 and qwen3_nothink, a mismatched one is flagged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sft.report.fidelity import (
    TemplateFidelityError,
    check_template_fidelity,
    enforce_fidelity,
    split_reasoning,
    to_openai_messages,
)
from sft.report.tokens import align_row, lf_data_args, sharegpt_converter
from tests.report.conftest import agent_row, call, role_content_entry, role_content_row, think


def narrated_row(uid: str) -> dict[str, Any]:
    """Reasoning + narration + a call in the tagged form (what render.py writes for narrated calls)."""
    row = agent_row(uid, 1)
    row["conversations"][1]["value"] = (
        think("look first")
        + "Let me list the files.\n<tool_call>\n"
        + json.dumps(call("ls"))
        + "\n</tool_call>"
    )
    return row


def test_qwen3_rows_with_reasoning_everywhere_are_equal(tiny_model_dir: Path) -> None:
    rows = [agent_row("a#0", 2), narrated_row("b#0")]
    report = check_template_fidelity(rows, str(tiny_model_dir), template="qwen3")
    assert report["summary"]["statuses"] == {"equal": 2}
    assert report["passed"] is True and report["summary"]["mismatch_rate"] == 0.0


def test_qwen3_empty_think_is_a_by_design_difference(tiny_model_dir: Path) -> None:
    row = agent_row("a#0", 2, reasoning=False)  # qwen3 trains an empty think block in every turn
    report = check_template_fidelity([row], str(tiny_model_dir), template="qwen3")
    assert report["summary"]["statuses"] == {"by_design:empty_think": 1}
    assert report["passed"] is True and "empty_think" in report["by_design"]


def test_qwen3_nothink_rows_pass(tiny_model_dir: Path) -> None:
    rows = [agent_row("a#0", 2, reasoning=False), agent_row("b#0", 1, reasoning=True)]
    report = check_template_fidelity(rows, str(tiny_model_dir), template="qwen3_nothink")
    # reasoning rows render identically; rows without reasoning differ only by Qwen3's final empty think block
    assert report["summary"]["statuses"] == {"by_design:empty_think": 1, "equal": 1}
    assert report["passed"] is True


def test_history_reasoning_is_by_design(tiny_model_dir: Path) -> None:
    row = agent_row("a#0", 1)
    # a second real user query: Qwen3's chat template drops the reasoning before it, LLaMA-Factory keeps it
    row["conversations"] += [
        {"from": "human", "value": "And now the docs?"},
        {"from": "gpt", "value": think("docs too") + "Done."},
    ]
    report = check_template_fidelity([row], str(tiny_model_dir), template="qwen3")
    assert report["summary"]["statuses"] == {"by_design:history_reasoning": 1}


def test_mismatched_sample_is_flagged_with_position_and_context(tiny_model_dir: Path) -> None:
    good = agent_row("good#0", 1)
    bad = agent_row("bad#0", 1, system="")  # no system prompt: LLaMA-Factory emits "\n\n" before "# Tools"
    doubled = narrated_row("nl#0")  # two newlines between narration and call: the chat template has one
    doubled["conversations"][1]["value"] = doubled["conversations"][1]["value"].replace(
        ".\n<tool_call>", ".\n\n<tool_call>"
    )
    report = check_template_fidelity([good, bad, doubled], str(tiny_model_dir), template="qwen3_nothink")
    assert report["summary"]["statuses"] == {"equal": 1, "mismatch": 2}
    assert report["passed"] is False and report["summary"]["mismatch_rate"] == pytest.approx(2 / 3, abs=1e-5)
    first = report["mismatches"][0]
    assert first["uid"] == "bad#0" and first["first_diff"] == 3
    assert "# Tools" in first["lf_context"] and "\n\n\n# Tools" in first["lf_context"]
    assert "\n# Tools" in first["chat_template_context"] and "\n\n\n" not in first["chat_template_context"]
    with pytest.raises(TemplateFidelityError, match="data/08_reporting/x/template_fidelity.json"):
        enforce_fidelity(report, report_path="data/08_reporting/x/template_fidelity.json", max_mismatch=0.0)
    enforce_fidelity(report, report_path="r.json", max_mismatch=0.7)  # under a looser limit it passes


def test_rows_llamafactory_drops_or_aborts_are_listed_and_aborts_always_fail(tiny_model_dir: Path) -> None:
    dropped = {"conversations": [{"from": "gpt", "value": "hi"}], "system": "s", "tools": ""}
    aborting = {
        "conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{oops"}],
        "system": "s",
        "tools": "",
    }
    report = check_template_fidelity(
        [agent_row("a#0", 1), dropped, aborting], str(tiny_model_dir), template="qwen3"
    )
    assert [s["status"] for s in report["lf_drops"]] == ["drop:invalid_role_order_or_count"]
    assert [s["status"] for s in report["lf_aborts"]] == ["abort:invalid_json"]
    with pytest.raises(TemplateFidelityError, match="would abort"):
        enforce_fidelity(report, report_path="r.json", max_mismatch=1.0)


def test_max_rows_limits_the_check(tiny_model_dir: Path) -> None:
    rows = [agent_row(f"r{n}#0", 1) for n in range(3)]
    report = check_template_fidelity(rows, str(tiny_model_dir), template="qwen3", max_rows=2)
    assert report["summary"]["rows"] == 3 and report["summary"]["checked"] == 2


def test_missing_tokenizer_is_reported_as_skipped_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    report = check_template_fidelity([agent_row("a#0", 1)], str(tmp_path / "absent"), template="qwen3")
    assert report["skipped"] is True and "absent" in report["reason"]
    enforce_fidelity(report, report_path="r.json", max_mismatch=0.0)
    assert "SKIPPED" in caplog.text


def test_openai_messages_split_reasoning_calls_and_parallel_results() -> None:
    row = narrated_row("a#0")
    row["conversations"][2]["value"] = "one\n</tool_response>\n<tool_response>\ntwo"
    messages, tools = to_openai_messages(align_row(row, sharegpt_converter(lf_data_args("qwen3"))))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert (
        messages[2]["reasoning_content"] == "look first"
        and messages[2]["content"] == "Let me list the files."
    )
    assert messages[2]["tool_calls"][0]["function"] == {"name": "Bash", "arguments": {"command": "ls"}}
    assert tools is not None and tools[0]["type"] == "function"
    assert split_reasoning("<think>\nr\n</think>\n\nanswer") == ("answer", "r")
    assert split_reasoning("plain") == ("plain", None)


def test_ready_made_role_content_rows_are_read_through_their_dataset_entry(tiny_model_dir: Path) -> None:
    rows = [role_content_row(agent_row("a#0", 2)), role_content_row(agent_row("b#0", 1))]
    report = check_template_fidelity(
        rows, str(tiny_model_dir), template="qwen3", dataset_entry=role_content_entry()
    )
    assert report["summary"]["statuses"] == {"equal": 2}
    # read with our default columns instead, LLaMA-Factory would find no conversations: every row dropped
    wrong = check_template_fidelity(rows, str(tiny_model_dir), template="qwen3")
    assert wrong["summary"]["statuses"] == {"drop:malformed_row": 2} and wrong["passed"] is False
