"""ATIF -> canonical messages: real claude-code and terminus-2 samples, plus hand-made edge cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sft.core.canonical import Message, ToolCall
from sft.sources.harbor.atif import AtifOptions, parse_agent_dir
from sft.sources.harbor.trial import extract_trial


def _agent(name: str = "claude-code") -> dict[str, Any]:
    return {"name": name, "version": "1.0", "model_name": "m1"}


def _doc(steps: list[dict[str, Any]], agent: str = "claude-code", **extra: Any) -> dict[str, Any]:
    for index, step in enumerate(steps, start=1):
        step.setdefault("step_id", index)
    return {"schema_version": "ATIF-v1.7", "agent": _agent(agent), "steps": steps, **extra}


def test_real_claude_code_trajectory(harbor, fixtures_dir: Path) -> None:
    trial_dir = harbor.trial("maas__fix__AbC1234", instance_id="opendatahub-io__models-as-a-service-12")
    harbor.copy_fixture("claude_code_trajectory_pass.json", trial_dir / "agent" / "trajectory.json")
    extraction = extract_trial(trial_dir, harbor.job_dir, "claude-code")
    assert extraction.rejects == [] and extraction.source_used == "atif"
    (trajectory,) = extraction.trajectories
    doc = json.loads((fixtures_dir / "claude_code_trajectory_pass.json").read_text())
    expected: list[Message] = []
    for step in doc["steps"]:
        if step["source"] == "user":
            expected.append(Message(role="user", content=step["message"]))
            continue
        calls = step.get("tool_calls", [])
        expected.append(
            Message(
                role="assistant",
                content=step["message"],
                reasoning_content=step.get("reasoning_content", ""),
                tool_calls=[
                    ToolCall(id=c["tool_call_id"], name=c["function_name"], arguments=c["arguments"])
                    for c in calls
                ],
            )
        )
        by_id = {r["source_call_id"]: r["content"] for r in step.get("observation", {}).get("results", [])}
        expected += [
            Message(role="tool", content=by_id[c["tool_call_id"]], tool_call_id=c["tool_call_id"])
            for c in calls
        ]
    # The one complete Harbor decoration in this (upstream-trimmed) file: the [metadata] line Harbor appends
    # from the session's toolUseResult; the model saw only the Bash output. The trimmed "[metadata] {...
    # [trimmed]" lines are no valid JSON, so the strict rule leaves them as written.
    decorated = '(Bash completed with no output)\n\n[metadata] {"noOutputExpected": false}'
    (position,) = [i for i, m in enumerate(expected) if m.content == decorated]
    expected[position] = expected[position].model_copy(update={"content": "(Bash completed with no output)"})
    assert trajectory.messages == expected
    assert trajectory.meta.extra["repairs"] == {"stripped_harbor_decorations": 1}
    assert trajectory.meta.extra["tool_result_sources"] == {"as_written": 11, "stripped": 1}
    assert (
        "raw_tool_result" not in trajectory.meta.extra["atif_caveats"]
    )  # the file has none: the note says so
    # spot checks that do not depend on the loop above
    assert len(trajectory.messages) == 1 + 11 + 12  # user, 11 agent steps, 12 tool results
    assert [c.name for c in trajectory.messages[1].tool_calls] == ["Read", "Bash"]
    assert trajectory.messages[2].tool_call_id == "toolu_vrtx_01DMAvK6aCFYSU2EZmeSe8Ha"
    assert trajectory.messages[3].tool_call_id == "toolu_vrtx_018vAE2TokScga3sbmCF56xd"
    assert trajectory.messages[-1].role == "assistant" and trajectory.messages[-1].content.startswith(
        "All tests pass"
    )
    meta = trajectory.meta
    assert (meta.source_kind, meta.teacher_model, meta.agent_type) == ("atif", "claude-opus-4-6", "main")
    assert meta.source_file == f"{trial_dir.name}/agent/trajectory.json"
    assert meta.usage["total_steps"] == 12


def test_claude_code_uses_raw_tool_result(harbor) -> None:
    trial_dir = harbor.trial("hello-world__X", instance_id="hello-world")
    harbor.copy_fixture("claude_code_hello_world.trajectory.json", trial_dir / "agent" / "trajectory.json")
    (trajectory,) = extract_trial(trial_dir, harbor.job_dir, "claude-code").trajectories
    tool = trajectory.messages[2]
    assert tool.role == "tool" and tool.tool_call_id == "toolu_01Rmm2GPxpGq9Er31axjfYRv"
    assert tool.content == (
        "File created successfully at: /app/hello.txt (file state is current in your context — no need to Read it back)"
    )
    assert "[metadata]" not in tool.content
    # the generic reader (other scaffolds) keeps Harbor's decorated observation text
    generic = parse_agent_dir(trial_dir / "agent", AtifOptions())
    assert "[metadata]" in generic.conversations[0].messages[2].content


def test_claude_code_sidechains_become_subagents(harbor) -> None:
    trial_dir = harbor.trial("t__sc")
    side = {"is_sidechain": True, "agent_id": "agent-7"}
    steps = [
        {"source": "user", "message": "Fix it", "extra": {"is_sidechain": False}},
        {
            "source": "agent",
            "message": "Delegating.",
            "tool_calls": [
                {"tool_call_id": "m1", "function_name": "Task", "arguments": {"prompt": "search"}}
            ],
            "observation": {"results": [{"source_call_id": "m1", "content": "found x"}]},
        },
        {"source": "user", "message": "search", "extra": side},
        {
            "source": "agent",
            "message": "",
            "reasoning_content": "grep it",
            "tool_calls": [{"tool_call_id": "s1", "function_name": "Grep", "arguments": {"pattern": "x"}}],
            "observation": {"results": [{"source_call_id": "s1", "content": "x.py"}]},
            "extra": side,
        },
        {"source": "agent", "message": "found x", "extra": side},
        {"source": "agent", "message": "Done."},
    ]
    harbor.write_atif(trial_dir / "agent", _doc(steps))
    main, sub = extract_trial(trial_dir, harbor.job_dir, "claude-code").trajectories
    assert main.messages == [
        Message(role="user", content="Fix it"),
        Message(
            role="assistant",
            content="Delegating.",
            tool_calls=[ToolCall(id="m1", name="Task", arguments={"prompt": "search"})],
        ),
        Message(role="tool", content="found x", tool_call_id="m1"),
        Message(role="assistant", content="Done."),
    ]
    assert sub.messages == [
        Message(role="user", content="search"),
        Message(
            role="assistant",
            reasoning_content="grep it",
            tool_calls=[ToolCall(id="s1", name="Grep", arguments={"pattern": "x"})],
        ),
        Message(role="tool", content="x.py", tool_call_id="s1"),
        Message(role="assistant", content="found x"),
    ]
    assert (sub.meta.agent_type, sub.meta.agent_id, sub.meta.trajectory_index) == ("subagent", "agent-7", 1)


def test_terminus2_rebuilt_default_mode(harbor, fixtures_dir: Path) -> None:
    trial_dir = harbor.trial("hello-world__T", instance_id="hello-world", agent_name="terminus-2")
    harbor.copy_fixture("terminus2_invalid_json.trajectory.json", trial_dir / "agent" / "trajectory.json")
    extraction = extract_trial(trial_dir, harbor.job_dir, "terminus2", rebuilt_atif="keep")
    (trajectory,) = extraction.trajectories
    doc = json.loads((fixtures_dir / "terminus2_invalid_json.trajectory.json").read_text())
    steps = doc["steps"]
    m = trajectory.messages
    assert m[0] == Message(role="user", content=steps[0]["message"])
    # the parse-error turn keeps the raw response; its observation (the error prompt) is the next user turn
    assert m[1] == Message(
        role="assistant", content=steps[1]["message"], reasoning_content=steps[1]["reasoning_content"]
    )
    assert m[2] == Message(role="user", content=steps[1]["observation"]["results"][0]["content"])
    assert m[3].content.startswith("Analysis: I received an error")
    assert m[3].tool_calls == [
        ToolCall(
            id="call_1_1",
            name="bash_command",
            arguments={"keystrokes": "printf 'Hello, world!\\n' > hello.txt\n", "duration": 0.1},
        )
    ]
    assert m[4] == Message(
        role="tool", content=steps[2]["observation"]["results"][0]["content"], tool_call_id="call_1_1"
    )
    assert m[5].tool_calls == [ToolCall(id="call_2_task_complete", name="mark_task_complete", arguments={})]
    # The screen after mark_task_complete has no source_call_id (Harbor never links it): it is that call's
    # result, not a user turn after an unanswered call.
    assert m[6] == Message(
        role="tool",
        content=steps[3]["observation"]["results"][0]["content"],
        tool_call_id="call_2_task_complete",
    )
    assert m[6].content.startswith("Current terminal state:")
    assert m[8] == Message(
        role="tool",
        content=steps[4]["observation"]["results"][0]["content"],
        tool_call_id="call_3_task_complete",
    )
    assert len(m) == 9
    assert trajectory.meta.extra["atif_content_rebuilt"] is True
    assert trajectory.meta.extra["repairs"] == {"paired_result_without_id": 2}
    assert trajectory.meta.teacher_model == "openai/gpt-4o"
    assert extraction.counters["rebuilt_atif_conversations"] == 1


def test_terminus2_rebuilt_is_dropped_by_default_with_a_reason(harbor) -> None:
    trial_dir = harbor.trial("hello-world__D", instance_id="hello-world", agent_name="terminus-2")
    harbor.copy_fixture("terminus2_invalid_json.trajectory.json", trial_dir / "agent" / "trajectory.json")
    extraction = extract_trial(trial_dir, harbor.job_dir, "terminus2")
    assert extraction.trajectories == []
    (reject,) = extraction.rejects
    assert (reject.stage, reject.reason) == ("parse", "rebuilt_atif")
    assert reject.trajectory == "hello-world__D#hello-world__D/agent/trajectory.json#main"
    assert "trajectory.json" in reject.detail and "(4 model turns)" in reject.detail
    assert "raw_content=true" in reject.detail and "rebuilt_atif: keep" in reject.detail
    assert extraction.counters["rebuilt_atif_dropped_turns"] == 4


def test_terminus2_linear_history_continuation(harbor) -> None:
    trial_dir = harbor.trial("hello-world__L", instance_id="hello-world", agent_name="terminus-2")
    agent = trial_dir / "agent"
    harbor.copy_fixture("terminus2_linear_history.trajectory.json", agent / "trajectory.json")
    harbor.copy_fixture("terminus2_linear_history.trajectory.cont-1.json", agent / "trajectory.cont-1.json")
    extraction = extract_trial(trial_dir, harbor.job_dir, "terminus2")
    first, second = extraction.trajectories
    # segment 0 ends at the replace boundary (the summarisation handoff)
    assert [x.role for x in first.messages] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert first.messages[-1].content.startswith(
        "New Terminal Output:\n\nroot@CONTAINER_ID:/app# echo 'test2'"
    )
    assert first.meta.extra["segment"] == 0 and first.meta.extra["atif_files"] == ["trajectory.json"]
    # segment 1 is the continuation: copied_context drop starts it at the hand-off prompt (the copied
    # questions turn is trained in the questions sub-agent, not again here)
    cont = json.loads((harbor.job_dir / trial_dir.name / "agent" / "trajectory.cont-1.json").read_text())
    assert second.messages[0] == Message(role="user", content=cont["steps"][3]["message"])
    assert second.messages[0].content.startswith("Here are the answers the other agent provided.")
    assert [x.role for x in second.messages] == ["user", "assistant"] * 4 + ["user"]
    assert [x.content for x in second.messages if x.role == "assistant"] == [
        s["message"] for s in cont["steps"][4:]
    ]
    assert all(x.trainable for x in second.messages)
    assert second.meta.extra["repairs"] == {"dropped_copied_context": 1}
    # copied_context: context keeps the copied turns (task + questions prompt joined, the questions trained)
    kept = extract_trial(trial_dir, harbor.job_dir, "terminus2", copied_context="context").trajectories[1]
    assert [(x.role, x.trainable) for x in kept.messages[:3]] == [
        ("user", True),
        ("assistant", True),
        ("user", True),
    ]
    assert kept.messages[0].content == cont["steps"][0]["message"] + "\n\n" + cont["steps"][1]["message"]
    assert kept.messages[1].content == cont["steps"][2]["message"]
    assert kept.meta.extra["repairs"] == {"merged_user_turns": 1}
    assert second.meta.source_file == f"{trial_dir.name}/agent/trajectory.cont-1.json"
    assert second.meta.extra["atif_files"] == ["trajectory.cont-1.json"]
    assert all("atif_content_rebuilt" not in t.meta.extra for t in extraction.trajectories)  # raw JSON text
    missing = [p for p in extraction.problems if "referenced but missing" in p]
    assert len(missing) == 3  # the three summarisation subagent files are not in the golden set


def test_summarization_subagent_files_and_embedded_subagents(harbor) -> None:
    trial_dir = harbor.trial("t__sub", agent_name="terminus-2")
    agent = trial_dir / "agent"
    main_steps = [
        {"source": "user", "message": "task"},
        {"source": "agent", "message": "a1", "observation": {"results": [{"content": "o1"}]}},
        {
            "source": "system",
            "message": "Performed context summarization.",
            "extra": {"context_management": {"type": "compaction", "boundary": "replace"}},
            "observation": {
                "results": [
                    {
                        "subagent_trajectory_ref": [
                            {"trajectory_path": "trajectory.summarization-1-summary.json"}
                        ]
                    }
                ]
            },
        },
    ]
    embedded = _doc(
        [{"source": "user", "message": "inner"}, {"source": "agent", "message": "inner answer"}],
        agent="terminus-2",
        trajectory_id="emb-1",
    )
    harbor.write_atif(agent, _doc(main_steps, agent="terminus-2", subagent_trajectories=[embedded]))
    summary_steps = [
        {"source": "user", "message": "task", "is_copied_context": True},
        {"source": "agent", "message": "a1", "is_copied_context": True},
        {"source": "user", "message": "Summarize."},
        {"source": "agent", "message": "Summary text"},
    ]
    harbor.write_atif(
        agent,
        _doc(summary_steps, agent="terminus-2-summarization-summary"),
        "trajectory.summarization-1-summary.json",
    )
    extraction = extract_trial(trial_dir, harbor.job_dir, "terminus2")
    by_id = {t.meta.agent_id: t for t in extraction.trajectories}
    assert set(by_id) == {None, "emb-1", "summarization-1-summary"}
    assert by_id["emb-1"].messages == [
        Message(role="user", content="inner"),
        Message(role="assistant", content="inner answer"),
    ]
    summary = by_id["summarization-1-summary"]
    assert summary.meta.agent_type == "subagent"
    # copied_context drop: the sub-agent's own answer after its own prompt; the copied a1 is trained in main
    assert summary.messages == [
        Message(role="user", content="Summarize."),
        Message(role="assistant", content="Summary text"),
    ]
    assert summary.meta.extra["repairs"] == {"dropped_copied_context": 1}
    with_context = extract_trial(trial_dir, harbor.job_dir, "terminus2", copied_context="context")
    (summary,) = [t for t in with_context.trajectories if t.meta.agent_id == "summarization-1-summary"]
    assert [(x.content, x.trainable) for x in summary.messages if x.role == "assistant"] == [
        ("a1", True),
        ("Summary text", True),
    ]
    assert summary.meta.source_file == f"{trial_dir.name}/agent/trajectory.summarization-1-summary.json"
    assert extraction.trajectories[0].meta.agent_type == "main"
    no_subs = extract_trial(trial_dir, harbor.job_dir, "terminus2", include_subagents=False)
    assert [t.meta.agent_id for t in no_subs.trajectories] == [None]


def test_replace_boundary_in_one_file_and_matching_continuation(harbor) -> None:
    agent = harbor.trial("t__rb", agent_name="terminus-2") / "agent"
    steps = [
        {"source": "user", "message": "task"},
        {"source": "agent", "message": "a1"},
        {
            "source": "system",
            "message": "compacted",
            "extra": {"context_management": {"type": "compaction", "boundary": "replace"}},
            "observation": {"results": [{"content": [{"type": "text", "text": "Summary so far"}]}]},
        },
        {"source": "user", "message": "continue"},
        {"source": "agent", "message": "a2"},
    ]
    harbor.write_atif(
        agent, _doc(steps, agent="terminus-2", continued_trajectory_ref="trajectory.cont-1.json")
    )
    cont = [
        {"source": "user", "message": "continue", "is_copied_context": True},
        {"source": "agent", "message": "a2", "is_copied_context": True},
        {"source": "agent", "message": "a3", "llm_call_count": 0},
        {"source": "agent", "message": "a4"},
    ]
    harbor.write_atif(agent, _doc(cont, agent="terminus-2"), "trajectory.cont-1.json")
    result = parse_agent_dir(agent)
    first, second = result.conversations
    assert first.messages == [Message(role="user", content="task"), Message(role="assistant", content="a1")]
    # after the boundary: its observation text, then the rest; the continuation's copied steps repeat this
    # sample exactly, so they are dropped and the sample is extended
    # the boundary's text and the next user step are one user turn (repair merged_user_turns)
    assert second.messages == [
        Message(role="user", content="Summary so far\n\ncontinue"),
        Message(role="assistant", content="a2"),
        Message(role="assistant", content="a3", trainable=False),
        Message(role="assistant", content="a4"),
    ]
    assert second.extra["atif_files"] == ["trajectory.json", "trajectory.cont-1.json"]


def test_unknown_version_content_parts_and_continuation_loop(harbor) -> None:
    agent = harbor.trial("t__v", agent_name="open-code") / "agent"
    steps = [
        {"source": "system", "message": "sys"},
        {
            "source": "user",
            "message": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"media_type": "image/png", "path": "i.png"}},
                {"type": "text", "text": "here"},
            ],
        },
        {
            "source": "agent",
            "message": "ok",
            "tool_calls": [
                {"tool_call_id": "c1", "function_name": "read", "arguments": {}},
                {"tool_call_id": "c2", "function_name": "ls", "arguments": {}},
            ],
            "observation": {
                "results": [
                    {"source_call_id": "c2", "content": "r2"},
                    {"source_call_id": "c1", "content": [{"type": "text", "text": "r1"}]},
                ]
            },
        },
    ]
    doc = _doc(steps, agent="opencode", continued_trajectory_ref="trajectory.json")
    doc["schema_version"] = "ATIF-v2.0"
    harbor.write_atif(agent, doc)
    result = parse_agent_dir(agent)
    (conv,) = result.conversations
    assert conv.messages[1] == Message(role="user", content="look\nhere")
    assert [(m.role, m.tool_call_id, m.content) for m in conv.messages[3:]] == [
        ("tool", "c1", "r1"),
        ("tool", "c2", "r2"),
    ]
    assert any("unknown schema_version 'ATIF-v2.0'" in p for p in result.problems)
    assert any("loops back" in p for p in result.problems)
    assert any("'image' has no text" in p for p in result.problems)


def test_atif_agent_name_mismatch(harbor) -> None:
    trial_dir = harbor.trial("t__mm", agent_name=None)
    harbor.copy_fixture("terminus2_invalid_json.trajectory.json", trial_dir / "agent" / "trajectory.json")
    (reject,) = extract_trial(trial_dir, harbor.job_dir, "claude-code").rejects
    assert (reject.stage, reject.reason) == ("scaffold", "scaffold_mismatch")
    assert "terminus-2" in reject.detail and "claude-code" in reject.detail


def test_atif_with_lone_surrogate_and_emoji_is_repaired(harbor) -> None:
    agent = harbor.trial("t__u", agent_name="opencode") / "agent"
    text = json.dumps(
        _doc(
            [{"source": "user", "message": "修复 🐛"}, {"source": "agent", "message": "PLACEHOLDER"}],
            agent="opencode",
        ),
        ensure_ascii=False,
    )
    (agent / "trajectory.json").write_text(
        text.replace("PLACEHOLDER", "broken \\udc80 half"), encoding="utf-8"
    )
    result = parse_agent_dir(agent)
    (conv,) = result.conversations
    assert conv.messages == [
        Message(role="user", content="修复 🐛"),
        Message(role="assistant", content="broken \ufffd half"),
    ]
    assert any("lone UTF-16 surrogate" in p for p in result.problems)
