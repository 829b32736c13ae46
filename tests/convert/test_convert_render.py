"""render_lf_row / render_im_row / dataset_info_entry: every shape rule of docs/llamafactory-rules.md §3 and §14.1."""

from __future__ import annotations

import json

import pytest

from sft.rules.lf_rules import check_lf_row, parse_function_call_value
from sft.rules.render import (
    DEFAULT_SYSTEM,
    OBSERVATION_SEPARATOR,
    RenderError,
    dataset_info_entry,
    render_im_row,
    render_lf_row,
)
from sft.rules.validate import repair_and_validate
from tests.convert.builders import TOOLS, assistant, call, simple, system, tool, traj, user

COLUMNS = dataset_info_entry("x.json")["columns"]


def roles(row: dict) -> list[str]:
    return [turn["from"] for turn in row["conversations"]]


def values(row: dict) -> list[str]:
    return [turn["value"] for turn in row["conversations"]]


def test_basic_row_shape_and_string_columns() -> None:
    row = render_lf_row(simple(), keep_reasoning=True)
    assert roles(row) == ["human", "function_call", "observation", "gpt"]
    assert row["system"] == "You are a coding agent."
    assert json.loads(row["tools"]) == TOOLS
    assert all(isinstance(v, str) for k, v in row.items() if k != "conversations")
    assert json.loads(row["_meta"])["instance_id"] == "django__django-12345"
    assert row["_uid"] == "django__django-12345__abc#0"
    assert values(row)[1] == '{"name": "bash", "arguments": {"command": "ls"}}'
    assert check_lf_row(row, columns=COLUMNS, tags=None) == []


def test_no_tools_gives_empty_string_not_empty_array() -> None:
    row = render_lf_row(traj(user(), assistant("hi"), tools=[]), keep_reasoning=True)
    assert row["tools"] == ""


def test_default_system_when_missing_or_empty() -> None:
    assert render_lf_row(traj(user(), assistant("hi")), keep_reasoning=True)["system"] == DEFAULT_SYSTEM
    assert (
        render_lf_row(traj(system("  "), user(), assistant("hi")), keep_reasoning=True)["system"]
        == DEFAULT_SYSTEM
    )
    assert DEFAULT_SYSTEM


def test_parallel_calls_are_one_json_list_and_one_observation() -> None:
    t = traj(
        user(),
        assistant(
            calls=[call(id="a", arguments={"command": "ls"}), call("read_file", {"path": "é.py"}, id="b")]
        ),
        tool("out a", id="a"),
        tool("out b", id="b"),
        assistant("done"),
    )
    row = render_lf_row(t, keep_reasoning=True)
    assert roles(row) == ["human", "function_call", "observation", "gpt"]
    assert json.loads(values(row)[1]) == [
        {"name": "bash", "arguments": {"command": "ls"}},
        {"name": "read_file", "arguments": {"path": "é.py"}},
    ]
    assert "é.py" in values(row)[1]  # ensure_ascii=False
    assert values(row)[2] == "out a" + OBSERVATION_SEPARATOR + "out b"
    assert values(row)[2] == "out a\n</tool_response>\n<tool_response>\nout b"
    assert check_lf_row(row, columns=COLUMNS, tags=None) == []


def test_reasoning_prefix_exact_wrapper_on_call_and_final_answer() -> None:
    t = traj(
        user(),
        assistant(reasoning="I should list.", calls=[call(id="a")]),
        tool(id="a"),
        assistant("All good.", reasoning="\nDone now.\n"),
    )
    row = render_lf_row(t, keep_reasoning=True)
    assert (
        values(row)[1]
        == '<think>\nI should list.\n</think>\n\n{"name": "bash", "arguments": {"command": "ls"}}'
    )
    assert values(row)[3] == "<think>\nDone now.\n</think>\n\nAll good."
    assert parse_function_call_value(values(row)[1]) == [("bash", {"command": "ls"})]


def test_keep_reasoning_false_removes_reasoning_entirely() -> None:
    t = traj(
        user(),
        assistant("Let me look.", reasoning="secret plan", calls=[call(id="a")]),
        tool(id="a"),
        assistant("All good.", reasoning="wrap up"),
    )
    row = render_lf_row(t, keep_reasoning=False)
    joined = json.dumps(row["conversations"])
    assert "think" not in joined and "secret plan" not in joined and "wrap up" not in joined
    assert values(row)[3] == "All good."
    assert (
        values(row)[1]
        == 'Let me look.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>'
    )


def test_narration_with_call_uses_single_tagged_block() -> None:
    t = traj(
        user(),
        assistant("Let me look.", reasoning="plan", calls=[call(id="a"), call(id="b")]),
        tool(id="a"),
        tool(id="b"),
        assistant("done"),
    )
    value = values(render_lf_row(t, keep_reasoning=True))[1]
    assert value.startswith("<think>\nplan\n</think>\n\nLet me look.\n<tool_call>\n[")
    assert value.endswith("]\n</tool_call>")
    assert value.count("<tool_call>") == 1
    assert [name for name, _ in parse_function_call_value(value)] == ["bash", "bash"]


def test_tags_inside_arguments_are_escaped_but_parse_back_identically() -> None:
    nasty = {"path": "x.py", "new_str": "<think>\nhm\n</think>\n\n<tool_call>{}</tool_call>"}
    t = traj(
        user(), assistant(reasoning="r", calls=[call("edit", nasty, id="a")]), tool(id="a"), assistant("ok")
    )
    value = values(render_lf_row(t, keep_reasoning=True))[1]
    assert "</tool_call>" not in value.split("</think>\n\n", 1)[1]
    assert parse_function_call_value(value) == [("edit", nasty)]


def test_reasoning_with_closing_think_falls_back_to_tagged_form() -> None:
    t = traj(
        user(), assistant(reasoning="odd </think> text", calls=[call(id="a")]), tool(id="a"), assistant("ok")
    )
    row = render_lf_row(t, keep_reasoning=True)
    assert "<tool_call>\n" in values(row)[1]
    assert parse_function_call_value(values(row)[1]) == [("bash", {"command": "ls"})]
    assert check_lf_row(row, columns=COLUMNS, tags=None) == []


def test_literal_tool_call_tag_in_narration_is_a_render_error() -> None:
    t = traj(
        user(), assistant("I will emit <tool_call> now", calls=[call(id="a")]), tool(id="a"), assistant("ok")
    )
    with pytest.raises(RenderError) as caught:
        render_lf_row(t, keep_reasoning=True)
    assert caught.value.reason == "tool_call_tag_in_text"


def test_reasoning_only_turn_without_reasoning_is_a_render_error() -> None:
    t = traj(user(), assistant(reasoning="only thoughts"), user("?"), assistant("done"))
    assert roles(render_lf_row(t, keep_reasoning=True)) == ["human", "gpt", "human", "gpt"]
    with pytest.raises(RenderError) as caught:
        render_lf_row(t, keep_reasoning=False)
    assert caught.value.reason == "empty_turn_without_reasoning"


def test_sample_ending_on_a_call_ends_on_function_call() -> None:
    t = traj(
        user(), assistant(calls=[call(id="a")]), tool(id="a"), assistant(calls=[call(id="b")]), tool(id="b")
    )
    fixed, _ = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None
    row = render_lf_row(fixed, keep_reasoning=True)
    assert roles(row) == ["human", "function_call", "observation", "function_call"]
    assert check_lf_row(row, columns=COLUMNS, tags=None) == []


def test_untrainable_turns_cut_the_sample_before_them() -> None:
    t = traj(
        user(),
        assistant(calls=[call(id="a")]),
        tool(id="a"),
        assistant("mine"),
        user("next"),
        assistant("dispatched", trainable=False),
        user("more"),
        assistant("later"),
    )
    row = render_lf_row(t, keep_reasoning=True)
    assert roles(row) == ["human", "function_call", "observation", "gpt"]
    assert values(row)[-1] == "mine"
    assert "dispatched" not in json.dumps(row) and "later" not in json.dumps(row)


def test_untrainable_first_turn_is_a_render_error() -> None:
    t = traj(user(), assistant("copied", trainable=False), user(), assistant("mine"))
    with pytest.raises(RenderError) as caught:
        render_lf_row(t, keep_reasoning=True)
    assert caught.value.reason == "no_trainable_prefix"


def test_im_row_round_trips_the_trajectory() -> None:
    original = simple()
    row = render_im_row(original)
    assert type(original).model_validate(json.loads(json.dumps(row))) == original


def test_dataset_info_entry_shape() -> None:
    assert dataset_info_entry("agent_sft.json") == {
        "file_name": "agent_sft.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
    }


def test_unicode_and_repaired_surrogates_write_as_utf8() -> None:
    bad = json.loads('"x \\udc00 y"')
    t = traj(
        user("中文 ✓ " + bad),
        assistant(calls=[call(arguments={"command": "echo 😀"}, id="a")]),
        tool(bad, id="a"),
        assistant("完成"),
    )
    fixed, _ = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None
    row = render_lf_row(fixed, keep_reasoning=True)
    encoded = json.dumps(row, ensure_ascii=False).encode("utf-8")
    assert "😀".encode() in encoded and "中文".encode() in encoded
