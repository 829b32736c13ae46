"""repair_and_validate: every repair and every rejection rule on crafted trajectories."""

from __future__ import annotations

import json

import pytest

from sft.core.canonical import is_repair, issue_code
from sft.rules.validate import repair_and_validate
from tests.convert.builders import assistant, call, simple, system, tool, traj, user


def codes(issues: list[str]) -> list[str]:
    return [issue_code(i) for i in issues]


def test_valid_trajectory_passes_unchanged_without_notes() -> None:
    original = simple()
    fixed, issues = repair_and_validate(original, drop_tool_errors=False)
    assert issues == []
    assert fixed == original
    assert fixed is not original


def test_input_is_not_mutated() -> None:
    original = traj(user(), assistant(calls=[call()]), tool(), assistant("done"), tool("stray"))
    before = original.model_dump()
    repair_and_validate(original, drop_tool_errors=True)
    assert original.model_dump() == before


def test_missing_ids_are_filled_in_order_and_matched_to_results() -> None:
    t = traj(
        user(),
        assistant(calls=[call(), call("read_file", {"path": "a"})]),
        tool("r1"),
        tool("r2"),
        assistant(calls=[call()]),
        tool("r3"),
        assistant("done"),
    )
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None
    ids = [c.id for m in fixed.messages for c in m.tool_calls]
    assert ids == ["call_000001", "call_000002", "call_000003"]
    assert [m.tool_call_id for m in fixed.messages if m.role == "tool"] == ids
    assert "repair_filled_tool_call_ids" in codes(issues)
    assert all(is_repair(i) for i in issues)


def test_filled_ids_skip_ids_already_in_use() -> None:
    t = traj(
        user(),
        assistant(calls=[call(id="call_000001")]),
        tool(id="call_000001"),
        assistant(calls=[call()]),
        tool(),
        assistant("done"),
    )
    fixed, _ = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None
    assert fixed.messages[3].tool_calls[0].id == "call_000002"
    assert fixed.messages[4].tool_call_id == "call_000002"


def test_call_without_id_adopts_the_result_id() -> None:
    t = traj(user(), assistant(calls=[call()]), tool(id="toolu_1"), assistant("done"))
    fixed, _ = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None and fixed.messages[1].tool_calls[0].id == "toolu_1"


def test_parallel_results_out_of_order_are_reordered() -> None:
    t = traj(
        user(),
        assistant(calls=[call(id="a"), call(id="b")]),
        tool("B", id="b"),
        tool("A", id="a"),
        assistant("done"),
    )
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None
    assert [m.content for m in fixed.messages if m.role == "tool"] == ["A", "B"]
    assert "repair_reordered_tool_results" in codes(issues)


def test_trailing_tool_and_user_messages_are_trimmed() -> None:
    t = traj(user(), assistant(calls=[call(id="a")]), tool(id="a"), assistant("done"), user("thanks"))
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None and fixed.messages[-1].content == "done"
    assert "repair_trimmed_tail" in codes(issues)


def test_trailing_results_trimmed_leaves_final_call_turn() -> None:
    t = traj(
        user(), assistant(calls=[call(id="a")]), tool(id="a"), assistant(calls=[call(id="b")]), tool(id="b")
    )
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None
    assert fixed.messages[-1].role == "assistant" and fixed.messages[-1].tool_calls[0].id == "b"
    assert any(i.startswith("repair_trimmed_tail: 1 ") for i in issues)


def test_empty_placeholder_tool_output_becomes_empty_string() -> None:
    t = traj(user(), assistant(calls=[call(id="a")]), tool("(empty)", id="a"), assistant("done"))
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None and fixed.messages[2].content == ""
    assert "repair_empty_tool_output" in codes(issues)


def test_tool_error_turn_dropped_with_its_only_call() -> None:
    t = traj(
        user(),
        assistant("trying", calls=[call(id="a")]),
        tool("<tool_use_error>bad</tool_use_error>", id="a"),
        assistant(calls=[call(id="b")]),
        tool("fine", id="b"),
        assistant("done"),
    )
    kept, _ = repair_and_validate(t, drop_tool_errors=False)
    assert kept is not None and len(kept.messages) == 6
    fixed, issues = repair_and_validate(t, drop_tool_errors=True)
    assert fixed is not None
    assert [m.role for m in fixed.messages] == ["user", "assistant", "tool", "assistant"]
    assert fixed.messages[1].tool_calls[0].id == "b"
    assert "repair_dropped_tool_errors" in codes(issues)


def test_tool_error_in_parallel_calls_drops_only_that_call_and_result() -> None:
    t = traj(
        user(),
        assistant(calls=[call(id="a"), call(id="b"), call(id="c")]),
        tool("A", id="a"),
        tool("B failed", id="b", is_error=True),
        tool("C", id="c"),
        assistant("done"),
    )
    fixed, _ = repair_and_validate(t, drop_tool_errors=True)
    assert fixed is not None
    assert [c.id for c in fixed.messages[1].tool_calls] == ["a", "c"]
    assert [m.content for m in fixed.messages if m.role == "tool"] == ["A", "C"]


def test_all_parallel_calls_failing_drops_the_turn() -> None:
    t = traj(
        user(),
        assistant(calls=[call(id="a"), call(id="b")]),
        tool(id="a", is_error=True),
        tool(id="b", is_error=True),
        assistant("done"),
    )
    fixed, _ = repair_and_validate(t, drop_tool_errors=True)
    assert fixed is not None and [m.role for m in fixed.messages] == ["user", "assistant"]


def test_orphan_tool_result_is_rejected() -> None:
    t = traj(user(), assistant(calls=[call(id="a")]), tool(id="a"), tool(id="zzz"), assistant("done"))
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is None and "orphan_tool_result" in codes(issues)


def test_tool_result_after_plain_assistant_is_rejected() -> None:
    t = traj(user(), assistant("hi"), tool(id="a"), assistant("done"))
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is None and "orphan_tool_result" in codes(issues)


def test_unanswered_call_in_the_middle_is_rejected() -> None:
    t = traj(user(), assistant(calls=[call(id="a"), call(id="b")]), tool(id="a"), assistant("done"))
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is None and "unanswered_tool_call" in codes(issues)


def test_call_followed_by_user_is_rejected() -> None:
    t = traj(user(), assistant(calls=[call(id="a")]), user("go on"), assistant("done"))
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is None and "unanswered_tool_call" in codes(issues)


def test_non_dict_arguments_are_rejected_with_the_value() -> None:
    t = traj(
        user(), assistant(calls=[call(arguments='{"command": "ls"', id="a")]), tool(id="a"), assistant("done")
    )
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is None
    assert codes(issues) == ["non_object_arguments"]
    assert "str" in issues[0] and "command" in issues[0]


def test_list_arguments_are_rejected() -> None:
    t = traj(user(), assistant(calls=[call(arguments=[1, 2], id="a")]), tool(id="a"), assistant("done"))
    assert repair_and_validate(t, drop_tool_errors=False)[0] is None


def test_empty_assistant_turn_is_rejected() -> None:
    t = traj(user(), assistant(""), user("?"), assistant("done"))
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is None and "empty_assistant_turn" in codes(issues)


def test_reasoning_only_turn_is_not_empty() -> None:
    t = traj(user(), assistant(reasoning="thinking"), user("?"), assistant("done"))
    assert repair_and_validate(t, drop_tool_errors=False)[0] is not None


def test_role_order_rules() -> None:
    cases = {
        "no_user_first": traj(system(), assistant("hi")),
        "misplaced_system": traj(user(), assistant("a"), system(), user(), assistant("b")),
        "consecutive_user": traj(user(), user(), assistant("a")),
        "consecutive_assistant": traj(user(), assistant("a"), assistant("b")),
        "user_after_tool": traj(
            user(), assistant(calls=[call(id="a")]), tool(id="a"), user(), assistant("b")
        ),
        "empty_conversation": traj(user()),
    }
    for expected, t in cases.items():
        fixed, issues = repair_and_validate(t, drop_tool_errors=False)
        assert fixed is None, expected
        assert expected in codes(issues), (expected, issues)


def test_system_is_optional() -> None:
    assert repair_and_validate(traj(user(), assistant("a")), drop_tool_errors=False)[0] is not None


def test_no_trainable_turn_is_rejected() -> None:
    t = traj(user(), assistant("copied", trainable=False), user(), assistant("copied", trainable=False))
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is None and codes(issues) == ["no_trainable_prefix"]


def test_untrainable_turn_after_a_trainable_one_is_accepted() -> None:
    t = traj(user(), assistant("mine"), user(), assistant("dispatch", trainable=False))
    assert repair_and_validate(t, drop_tool_errors=False)[0] is not None


def test_lone_surrogates_are_replaced_and_counted() -> None:
    bad = json.loads('"broken \\ud83d emoji"')
    t = traj(
        user(bad),
        assistant(calls=[call(arguments={"command": bad}, id="a")]),
        tool(bad, id="a"),
        assistant("ok \U0001f600"),
    )
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None
    assert fixed.messages[0].content == "broken \ufffd emoji"
    assert fixed.messages[1].tool_calls[0].arguments["command"] == "broken \ufffd emoji"
    assert fixed.messages[3].content == "ok \U0001f600"  # a real astral character is untouched
    assert "repair_lone_surrogates: 3" in " ".join(issues)
    json.dumps(fixed.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")  # must not raise


def test_duplicate_call_ids_in_one_turn_are_rejected() -> None:
    t = traj(
        user(),
        assistant(calls=[call(id="x"), call(id="x"), call(id="y")]),
        tool("1", id="x"),
        tool("2", id="y"),
        tool("3", id="x"),
        assistant("done"),
    )
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is None and codes(issues) == ["duplicate_tool_call_id"]


def test_several_leading_system_messages_are_merged_in_order_and_counted() -> None:
    """OpenCode's two system prompts: one system prompt, texts in order joined with "\\n"."""
    t = traj(system("provider prompt"), system("<env>\n  cwd: /app\n</env>"), user(), assistant("done"))
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None
    assert [m.role for m in fixed.messages] == ["system", "user", "assistant"]
    assert fixed.messages[0].content == "provider prompt\n<env>\n  cwd: /app\n</env>"
    assert codes(issues) == ["repair_merged_system_messages"]
    assert "agent/trajectory.json" in issues[0] and "messages 0-1" in issues[0]
    assert fixed.meta.extra["repairs"] == {"merged_system_messages": 1}
    assert "repairs" not in t.meta.extra  # the input is not mutated


def test_a_system_message_after_the_user_turn_is_still_rejected() -> None:
    fixed, issues = repair_and_validate(
        traj(system(), user(), system("late"), assistant("x")), drop_tool_errors=False
    )
    assert fixed is None and "misplaced_system" in codes(issues)


def test_an_empty_final_assistant_turn_is_trimmed_back_to_the_last_complete_turn() -> None:
    t = traj(
        system(),
        user(),
        assistant("look", calls=[call(id="c1")]),
        tool("a.py", id="c1"),
        assistant("answer", calls=[call(id="c2")]),
        tool("b.py", id="c2"),
        assistant(""),
        source_file="t1/agent/litellm-trajectory.jsonl",
        source_kind="litellm",
    )
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is not None
    assert fixed.messages == t.messages[:5]  # ends on the last complete turn (its call; result trimmed)
    assert codes(issues) == ["repair_trimmed_aborted_final_turn", "repair_trimmed_tail"]
    assert "t1/agent/litellm-trajectory.jsonl: message 6" in issues[0]
    assert fixed.meta.extra["repairs"] == {"trimmed_aborted_final_turn": 1, "trimmed_tail": 1}
    assert fixed.meta.extra["dropped_model_turns"] == {"aborted_empty_response": 1}


def test_an_empty_assistant_turn_in_the_middle_is_still_rejected() -> None:
    t = traj(system(), user(), assistant(""), user("go on"), assistant("done"))
    fixed, issues = repair_and_validate(t, drop_tool_errors=False)
    assert fixed is None and "empty_assistant_turn" in codes(issues)


def test_an_aborted_only_turn_leaves_nothing_to_train() -> None:
    fixed, issues = repair_and_validate(traj(system(), user(), assistant("")), drop_tool_errors=False)
    assert fixed is None and codes(issues) == ["no_user_first"]  # only the system prompt is left


def test_merged_system_prompt_renders_as_documented_in_qwen3_and_llamafactory() -> None:
    """README "Repair and normalisation rules": Qwen3's own chat template renders two system messages as two
    system turns; LLaMA-Factory's qwen3 template has one system slot, which renders the joined prompt as one turn
    (the words and their order are the same; the turn boundary between them becomes the join)."""
    jinja2 = pytest.importorskip("jinja2")
    template = pytest.importorskip("llamafactory.data.template")
    from tests.support.tiny_model import QWEN3_CHAT_TEMPLATE

    fixed, _ = repair_and_validate(
        traj(system("A"), system("B"), user("u"), assistant("x")), drop_tool_errors=False
    )
    assert fixed is not None
    chat = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(QWEN3_CHAT_TEMPLATE)
    source = chat.render(messages=[{"role": "system", "content": "A"}, {"role": "system", "content": "B"}])
    assert source == "<|im_start|>system\nA<|im_end|>\n<|im_start|>system\nB<|im_end|>\n"
    (slot,) = template.TEMPLATES["qwen3"].format_system.slots
    assert slot.replace("{{content}}", fixed.messages[0].content) == "<|im_start|>system\nA\nB<|im_end|>\n"
