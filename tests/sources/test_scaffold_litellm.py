"""Per scaffold, from a LiteLLM proxy log: the recovered conversations equal the conversations actually had."""

from __future__ import annotations

import json

import pytest

from sft.core.canonical import Message, ToolCall
from sft.sources.harbor.trial import extract_trial
from sft.sources.scaffolds import UnknownScaffoldError, get_adapter
from sft.sources.scaffolds.open_code import title_generator_reason

CC_SYSTEM = [
    {"type": "text", "text": "x-anthropic-billing-header: cch=1f2e;"},
    {"type": "text", "text": "You are Claude Code."},
]
CC_TOOLS = ["Bash", "Read", "Edit", "Write", "Task"]
SUB_TOOLS = ["Bash", "Read", "Grep"]


def _claude_code_records(harbor) -> list[dict]:
    """Main agent: narration + parallel calls, a Task subagent, a failed call and its retry, a final answer."""
    system = [dict(block) for block in CC_SYSTEM]
    user = {
        "role": "user",
        "content": [
            {"type": "text", "text": "Fix the 错误 in a.py 🐛", "cache_control": {"type": "ephemeral"}}
        ],
    }
    turn1 = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Read both files first.", "signature": "s1"},
            {"type": "text", "text": "Let me read the files."},
            {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "/a.py"}},
            {
                "type": "tool_use",
                "id": "t2",
                "name": "Bash",
                "input": {"command": "ls -la", "description": "list"},
            },
        ],
    }
    results1 = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "x = 1/0"},
            {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "a.py\nb.py"}]},
        ],
    }
    turn2 = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Ask a subagent.", "signature": "s2"},
            {
                "type": "tool_use",
                "id": "t3",
                "name": "Task",
                "input": {"prompt": "find callers", "subagent_type": "Explore"},
            },
        ],
    }
    results2 = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t3", "content": "called from b.py"}],
    }
    turn3 = {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "t4",
                "name": "Edit",
                "input": {"file_path": "/a.py", "old_string": "1/0", "new_string": "1"},
            }
        ],
    }
    results3 = {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t4",
                "is_error": True,
                "content": "<tool_use_error>File has not been read yet</tool_use_error>",
            }
        ],
    }
    final = [
        {"type": "thinking", "thinking": "Done now.", "signature": "s3"},
        {"type": "text", "text": "Fixed ✅"},
    ]

    sub_user = {"role": "user", "content": "find callers"}
    sub_turn = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "s1", "name": "Grep", "input": {"pattern": "a\\.py"}}],
    }
    sub_result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "s1", "content": "b.py:3"}],
    }

    sub_system = [{"type": "text", "text": "You are a search subagent."}]
    return [
        harbor.anth_record(system, [user], turn1["content"], tools=CC_TOOLS),
        harbor.anth_record(system, [user, turn1, results1], turn2["content"], tools=CC_TOOLS),
        harbor.anth_record(sub_system, [sub_user], sub_turn["content"], tools=SUB_TOOLS),
        harbor.anth_record(
            sub_system,
            [sub_user, sub_turn, sub_result],
            [{"type": "text", "text": "called from b.py"}],
            tools=SUB_TOOLS,
        ),
        harbor.anth_record(
            system, [user, turn1, results1, turn2, results2], turn3["content"], tools=CC_TOOLS, success=False
        ),
        harbor.anth_record(
            system, [user, turn1, results1, turn2, results2], turn3["content"], tools=CC_TOOLS
        ),
        harbor.anth_record(
            system, [user, turn1, results1, turn2, results2, turn3, results3], final, tools=CC_TOOLS
        ),
    ]


def test_claude_code_main_and_subagent_from_anthropic_log(harbor) -> None:
    trial_dir = harbor.trial("django__django-12345__AbCdEfG", agent_name="claude-code")
    records = _claude_code_records(harbor)
    records.insert(0, records.pop(3))  # file order does not matter: request_time does
    harbor.write_log(trial_dir / "agent", records)
    extraction = extract_trial(trial_dir, harbor.job_dir, "claude-code")
    assert extraction.rejects == []
    assert extraction.source_used == "litellm"
    main, sub = extraction.trajectories
    assert main.messages == [
        Message(role="system", content="x-anthropic-billing-header: cch=1f2e;\nYou are Claude Code."),
        Message(role="user", content="Fix the 错误 in a.py 🐛"),
        Message(
            role="assistant",
            content="Let me read the files.",
            reasoning_content="Read both files first.",
            tool_calls=[
                ToolCall(id="t1", name="Read", arguments={"file_path": "/a.py"}),
                ToolCall(id="t2", name="Bash", arguments={"command": "ls -la", "description": "list"}),
            ],
        ),
        Message(role="tool", content="x = 1/0", tool_call_id="t1"),
        Message(role="tool", content="a.py\nb.py", tool_call_id="t2"),
        Message(
            role="assistant",
            reasoning_content="Ask a subagent.",
            tool_calls=[
                ToolCall(
                    id="t3", name="Task", arguments={"prompt": "find callers", "subagent_type": "Explore"}
                )
            ],
        ),
        Message(role="tool", content="called from b.py", tool_call_id="t3"),
        Message(
            role="assistant",
            tool_calls=[
                ToolCall(
                    id="t4",
                    name="Edit",
                    arguments={"file_path": "/a.py", "old_string": "1/0", "new_string": "1"},
                )
            ],
        ),
        Message(
            role="tool",
            content="<tool_use_error>File has not been read yet</tool_use_error>",
            tool_call_id="t4",
            is_error=True,
        ),
        Message(role="assistant", content="Fixed ✅", reasoning_content="Done now."),
    ]
    assert [t["function"]["name"] for t in main.tools] == CC_TOOLS
    assert sub.messages == [
        Message(role="system", content="You are a search subagent."),
        Message(role="user", content="find callers"),
        Message(
            role="assistant", tool_calls=[ToolCall(id="s1", name="Grep", arguments={"pattern": "a\\.py"})]
        ),
        Message(role="tool", content="b.py:3", tool_call_id="s1"),
        Message(role="assistant", content="called from b.py"),
    ]
    assert (main.meta.agent_type, sub.meta.agent_type, sub.meta.agent_id) == (
        "main",
        "subagent",
        "subagent-1",
    )
    meta = main.meta
    assert (meta.instance_id, meta.repo, meta.trial_name) == (
        "django__django-12345",
        "django/django",
        trial_dir.name,
    )
    assert (meta.scaffold, meta.source_kind, meta.reward, meta.exception_type) == (
        "claude-code",
        "litellm",
        1.0,
        None,
    )
    assert meta.source_file == f"{trial_dir.name}/agent/litellm-trajectory.jsonl"
    assert meta.teacher_model == "claude-opus-4-6"
    assert meta.gen_params == {"model": "claude-opus-4-6", "max_tokens": 32000, "temperature": 1}
    assert [t.meta.trajectory_index for t in extraction.trajectories] == [0, 1]
    counters = extraction.counters
    assert counters["failed_requests_dropped"] == 1
    assert counters["prefix_duplicates_dropped"] == 4  # main calls 1, 2, the retried 3rd; subagent call 1
    assert counters["short_requests_dropped"] == 0


def test_claude_code_without_subagents(harbor) -> None:
    trial_dir = harbor.trial("t__1")
    harbor.write_log(trial_dir / "agent", _claude_code_records(harbor))
    extraction = extract_trial(trial_dir, harbor.job_dir, "claude-code", include_subagents=False)
    assert [t.meta.agent_type for t in extraction.trajectories] == ["main"]
    assert extraction.counters["subagents_skipped"] == 1


def _openai_history(harbor, n_turns: int, *, echo_reasoning: bool) -> tuple[list[dict], list[dict]]:
    """OpenAI-shape records of one conversation; the scaffold may or may not echo reasoning back."""
    history = [
        {"role": "system", "content": "You are opencode."},
        {"role": "user", "content": "Make tests pass"},
    ]
    records = []
    for k in range(n_turns):
        response = {
            "content": f"Running step {k}" if k % 2 == 0 else None,
            "reasoning_content": f"thought {k}",
            "tool_calls": [harbor.call(f"call_{k}", "bash", {"command": f"echo {k}"})],
        }
        records.append(harbor.oai_record(list(history), response, tools=["bash", "edit", "write"]))
        echoed = {k2: v for k2, v in response.items() if echo_reasoning or k2 != "reasoning_content"}
        history += [
            {"role": "assistant", **echoed},
            {"role": "tool", "tool_call_id": f"call_{k}", "content": f"{k}\n"},
        ]
    return records, history


def test_open_code_drops_title_generator_and_recovers_reasoning(harbor) -> None:
    trial_dir = harbor.trial("t__2", agent_name="opencode")
    records, _ = _openai_history(harbor, 3, echo_reasoning=False)
    title = harbor.oai_record(
        [
            {"role": "system", "content": "You are a title generator. You output ONLY a thread title."},
            {"role": "user", "content": "Generate a title for this conversation:"},
            {"role": "user", "content": "Make tests pass"},
        ],
        {"content": "Making tests pass"},
    )
    harbor.write_log(trial_dir / "agent", [records[0], title, *records[1:]])
    extraction = extract_trial(trial_dir, harbor.job_dir, "open-code")
    assert extraction.rejects == []
    (trajectory,) = extraction.trajectories
    assistants = [m for m in trajectory.messages if m.role == "assistant"]
    assert [m.reasoning_content for m in assistants] == ["thought 0", "thought 1", "thought 2"]
    assert [m.content for m in assistants] == ["Running step 0", "", "Running step 2"]
    assert [m.tool_calls[0].arguments for m in assistants] == [{"command": f"echo {k}"} for k in range(3)]
    assert trajectory.meta.extra["reasoning_turns_recovered"] == 2
    assert extraction.counters["title_generator_dropped"] == 1
    assert any("title-generator" in p for p in extraction.problems)


def test_title_generator_detection_is_conservative(harbor) -> None:
    agent_call = harbor.oai_record(
        [
            {"role": "system", "content": "Generate a title for each section"},
            {"role": "user", "content": "x"},
        ],
        {"content": "y"},
        tools=["bash"],
    )
    assert title_generator_reason(agent_call) is None  # it offers tools: an agent call
    plain = harbor.oai_record([{"role": "user", "content": "What is a title?"}], {"content": "y"})
    assert title_generator_reason(plain) is None


def test_openhands_sdk_uses_last_successful_call(harbor) -> None:
    trial_dir = harbor.trial("t__3", agent_name="openhands-sdk")
    records, history = _openai_history(harbor, 3, echo_reasoning=True)
    last_ok = harbor.oai_record(
        list(history), {"content": "All tests pass.", "reasoning_content": "verify"}, tools=["bash"]
    )
    failed = harbor.oai_record(
        list(history) + [{"role": "user", "content": "x"}], {"content": "?"}, tools=["bash"], success=False
    )
    harbor.write_log(trial_dir / "agent", [*records, last_ok, failed])
    extraction = extract_trial(trial_dir, harbor.job_dir, "openhands-sdk")
    (trajectory,) = extraction.trajectories
    assert len(trajectory.messages) == len(history) + 1
    assert trajectory.messages[-1] == Message(
        role="assistant", content="All tests pass.", reasoning_content="verify"
    )
    assert trajectory.messages[2].tool_calls == [
        ToolCall(id="call_0", name="bash", arguments={"command": "echo 0"})
    ]
    assert trajectory.meta.gen_params == {
        "model": "MiniMax-M2.7",
        "max_tokens": 4096,
        "temperature": 0.7,
        "top_p": 0.95,
    }
    assert trajectory.meta.usage == {"prompt_tokens": 10, "completion_tokens": 5}
    assert extraction.counters["failed_requests_dropped"] == 1


def test_terminus2_log_keeps_raw_text(harbor) -> None:
    trial_dir = harbor.trial("t__4", agent_name="terminus-2")
    prompt = "You are an AI assistant tasked with solving command-line tasks...\nTask Description:\nCreate hello.txt"
    answer1 = json.dumps(
        {
            "analysis": "Empty dir.",
            "plan": "printf",
            "commands": [{"keystrokes": "printf 'hi' > hello.txt\n", "duration": 0.1}],
        },
        indent=2,
    )
    answer2 = '{"analysis": "Done.", "plan": "", "commands": [], "task_complete": true}'
    history = [{"role": "user", "content": prompt}]
    r1 = harbor.oai_record(list(history), {"content": answer1, "reasoning_content": "simple"})
    history += [
        {"role": "assistant", "content": answer1},
        {"role": "user", "content": "New Terminal Output:\n$ "},
    ]
    r2 = harbor.oai_record(list(history), {"content": answer2})
    summary = harbor.oai_record(
        [
            {"role": "user", "content": "You are picking up work... summary"},
            {"role": "assistant", "content": "q"},
            {"role": "user", "content": "answers"},
        ],
        {"content": "{}"},
    )
    harbor.write_log(trial_dir / "agent", [r1, r2, summary])
    extraction = extract_trial(trial_dir, harbor.job_dir, "terminus2")
    main, sub = extraction.trajectories
    assert main.messages == [
        Message(role="user", content=prompt),
        Message(role="assistant", content=answer1, reasoning_content="simple"),
        Message(role="user", content="New Terminal Output:\n$ "),
        Message(role="assistant", content=answer2),
    ]
    assert all(not m.tool_calls for m in main.messages) and main.tools == []
    assert (sub.meta.agent_type, sub.meta.agent_id) == ("subagent", "summarization-1")


def test_scaffold_mismatch_from_result_json(harbor) -> None:
    trial_dir = harbor.trial("t__5", agent_name="terminus-2")
    harbor.write_log(trial_dir / "agent", _claude_code_records(harbor))
    extraction = extract_trial(trial_dir, harbor.job_dir, "claude-code")
    (reject,) = extraction.rejects
    assert (reject.stage, reject.reason) == ("scaffold", "scaffold_mismatch")
    assert "terminus-2" in reject.detail and "claude-code" in reject.detail
    assert extraction.trajectories == []


@pytest.mark.parametrize("scaffold", ["claude-code", "open-code", "openhands-sdk"])
def test_scaffold_mismatch_from_log_shape(harbor, scaffold: str) -> None:
    trial_dir = harbor.trial("t__6", agent_name=None)
    no_tools = [
        harbor.oai_record(
            [
                {"role": "user", "content": "p"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "o"},
            ],
            {"content": "{}"},
        )
    ]
    harbor.write_log(trial_dir / "agent", no_tools)
    (reject,) = extract_trial(trial_dir, harbor.job_dir, scaffold).rejects
    assert (reject.stage, reject.reason) == ("scaffold", "scaffold_mismatch")
    assert scaffold in reject.detail and "terminus-2" in reject.detail


def test_terminus2_rejects_tool_calling_log(harbor) -> None:
    trial_dir = harbor.trial("t__7", agent_name=None)
    harbor.write_log(trial_dir / "agent", _claude_code_records(harbor))
    (reject,) = extract_trial(trial_dir, harbor.job_dir, "terminus2").rejects
    assert reject.reason == "scaffold_mismatch" and "terminus2" in reject.detail


def test_registry() -> None:
    assert get_adapter("open-code").name == "open-code"
    assert get_adapter("opencode").name == "open-code"
    assert get_adapter("terminus-2").name == "terminus2"
    codex = get_adapter("codex")  # no proxy-log adapter: Harbor's ATIF through the generic reader
    assert (codex.name, codex.supports_litellm) == ("codex", False)
    with pytest.raises(UnknownScaffoldError, match="valid: claude-code"):
        get_adapter("no-such-agent")
