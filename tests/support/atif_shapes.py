"""ATIF-only demo trials: the real ATIF shapes of agents the proxy-log adapters do not cover.

Each shape follows what Harbor 0.25.0's converters write (the module of each is named below; the golden
files in tests/fixtures/harbor/ are the real examples) and carries its ground truth: the conversations a
faithful reader recovers with the default options, and the conversations it must refuse, by reason, with
their model turns (every model turn of the source is in one or the other).

- ``codex`` (no proxy-log adapter; ``agents/installed/codex.py``): a response's message and its
  function_call written as two agent steps (one model turn), ``apply_patch`` / ``shell`` calls;
- ``openhands`` (``agents/installed/openhands.py``): system prompt, user task, mid-run ``system`` steps
  ("Retrieving content for: ...", "Added workspace context"), native tool calls;
- ``gemini-cli``: observation results without ``source_call_id`` (one per call, in call order);
- ``claude-code`` ATIF without ``raw_tool_result``: Harbor's ``[stdout]`` / ``[metadata]`` decorations
  (``ClaudeCode._format_tool_result``);
- ``terminus-2`` ATIF-v1.6 in the default (rebuilt) mode: results without ``source_call_id``, a
  two-command batch and ``mark_task_complete`` (refused by default: ``rebuilt_atif``);
- ``terminus-2`` raw_content with a context summarisation: main segment, ``replace`` boundary, hand-off,
  and the ``summarization-1-{summary,questions,answers}`` sub-agent files with copied context.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sft.core.canonical import Message, ToolCall


@dataclass(frozen=True)
class AtifShape:
    """One ATIF-only trial: its files (name under agent/ -> document) and what must come out of it."""

    key: str  # short name, part of the instance id
    agent_name: str  # Harbor agent name (result.json agent_info.name)
    files: dict[str, dict[str, Any]]
    # (agent_type, agent_id, messages) per conversation kept with default options, main first
    expected: list[tuple[str, str | None, list[Message]]]
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> model turns refused
    source_turns: int = 0  # model turns in the files (copied context excluded)


def _doc(agent: str, steps: list[dict[str, Any]], version: str = "ATIF-v1.7", **extra: Any) -> dict[str, Any]:
    for index, step in enumerate(steps, start=1):
        step["step_id"] = index
    return {
        "schema_version": version,
        "session_id": f"demo-{agent}",
        "agent": {"name": agent, "version": "1.0.0", "model_name": "openai/GLM-5-FP8", **extra},
        "steps": steps,
    }


def _call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"tool_call_id": call_id, "function_name": name, "arguments": arguments}


def _codex(task: str) -> AtifShape:
    patch = "*** Begin Patch\n*** Update File: util.py\n-    return a - b\n+    return a + b\n*** End Patch"
    steps = [
        {"source": "user", "message": task},
        {
            "source": "agent",
            "message": "Let me read util.py.",
            "reasoning_content": "Find the bug first.",
            "llm_call_count": 1,
        },
        {
            "source": "agent",
            "message": "",
            "llm_call_count": 1,
            "tool_calls": [_call("call_r1", "shell", {"command": ["cat", "util.py"]})],
            "observation": {
                "results": [{"source_call_id": "call_r1", "content": "def add(a, b):\n    return a - b\n"}]
            },
        },
        {
            "source": "agent",
            "message": "",
            "llm_call_count": 1,
            "tool_calls": [_call("call_r2", "apply_patch", {"input": patch})],
            "observation": {
                "results": [
                    {
                        "source_call_id": "call_r2",
                        "content": "Success. Updated the following files:\nM util.py",
                    }
                ]
            },
        },
        {"source": "agent", "message": "Fixed `add`: it subtracted instead of adding.", "llm_call_count": 1},
    ]
    expected = [
        Message(role="user", content=task),
        Message(
            role="assistant",
            content="Let me read util.py.",
            reasoning_content="Find the bug first.",
            tool_calls=[ToolCall(id="call_r1", name="shell", arguments={"command": ["cat", "util.py"]})],
        ),
        Message(role="tool", content="def add(a, b):\n    return a - b\n", tool_call_id="call_r1"),
        Message(
            role="assistant",
            content="",
            tool_calls=[ToolCall(id="call_r2", name="apply_patch", arguments={"input": patch})],
        ),
        Message(
            role="tool", content="Success. Updated the following files:\nM util.py", tool_call_id="call_r2"
        ),
        Message(role="assistant", content="Fixed `add`: it subtracted instead of adding."),
    ]
    return AtifShape(
        "codex",
        "codex",
        {"trajectory.json": _doc("codex", steps, "ATIF-v1.6")},
        [("main", None, expected)],
        source_turns=3,
    )


def _openhands(task: str) -> AtifShape:
    system = (
        "You are OpenHands agent, a helpful AI assistant that can interact with a computer to solve tasks."
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "execute_bash",
                "description": "Execute a bash command.",
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"],
                },
            },
        }
    ]
    steps = [
        {"source": "system", "message": system},
        {"source": "user", "message": task},
        {"source": "system", "message": f"Retrieving content for: {task[:40]}"},
        {"source": "system", "message": "Added workspace context"},
        {
            "source": "agent",
            "message": "Running the tests.",
            "tool_calls": [_call("toolu_1", "execute_bash", {"command": "pytest -q"})],
            "observation": {"results": [{"source_call_id": "toolu_1", "content": "1 failed, 3 passed"}]},
        },
        {"source": "system", "message": "Retrieving content for: pytest"},
        {
            "source": "agent",
            "message": "One test fails; the fix is in util.py. Done.",
            "tool_calls": [_call("toolu_2", "finish", {"message": "Fixed."})],
        },
    ]
    expected = [
        Message(role="system", content=system),
        Message(
            role="user", content=f"{task}\n\nRetrieving content for: {task[:40]}\n\nAdded workspace context"
        ),
        Message(
            role="assistant",
            content="Running the tests.",
            tool_calls=[ToolCall(id="toolu_1", name="execute_bash", arguments={"command": "pytest -q"})],
        ),
        Message(
            role="tool",
            content="1 failed, 3 passed\n\nRetrieving content for: pytest",
            tool_call_id="toolu_1",
        ),
        Message(
            role="assistant",
            content="One test fails; the fix is in util.py. Done.",
            tool_calls=[ToolCall(id="toolu_2", name="finish", arguments={"message": "Fixed."})],
        ),
    ]
    doc = _doc("openhands", steps, "ATIF-v1.5", tool_definitions=tools)
    return AtifShape(
        "openhands", "openhands", {"trajectory.json": doc}, [("main", None, expected)], source_turns=2
    )


def _gemini(task: str) -> AtifShape:
    steps = [
        {"source": "user", "message": task},
        {
            "source": "agent",
            "message": "Reading both files.",
            "tool_calls": [
                _call("read-1", "read_file", {"absolute_path": "/testbed/util.py"}),
                _call("read-2", "read_file", {"absolute_path": "/testbed/test_util.py"}),
            ],
            "observation": {
                "results": [{"content": "def add(a, b): return a - b"}, {"content": "assert add(1, 2) == 3"}]
            },
        },
        {"source": "agent", "message": "The test expects 3; `add` subtracts. Change `-` to `+`."},
    ]
    expected = [
        Message(role="user", content=task),
        Message(
            role="assistant",
            content="Reading both files.",
            tool_calls=[
                ToolCall(id="read-1", name="read_file", arguments={"absolute_path": "/testbed/util.py"}),
                ToolCall(id="read-2", name="read_file", arguments={"absolute_path": "/testbed/test_util.py"}),
            ],
        ),
        Message(role="tool", content="def add(a, b): return a - b", tool_call_id="read-1"),
        Message(role="tool", content="assert add(1, 2) == 3", tool_call_id="read-2"),
        Message(role="assistant", content="The test expects 3; `add` subtracts. Change `-` to `+`."),
    ]
    return AtifShape(
        "gemini",
        "gemini-cli",
        {"trajectory.json": _doc("gemini-cli", steps, "ATIF-v1.6")},
        [("main", None, expected)],
        source_turns=2,
    )


def _claude_decorated(task: str) -> AtifShape:
    listing = "util.py\ntest_util.py"
    # ClaudeCode._format_tool_result: the content, then "[stdout]\n<stdout>" and "[metadata] <json>" from
    # the session's toolUseResult (the model saw only the content)
    decorated = f"{listing}\n\n[stdout]\n{listing}\n[metadata] " + json.dumps({"noOutputExpected": False})
    steps = [
        {"source": "user", "message": task},
        {
            "source": "agent",
            "message": "Listing the files.",
            "tool_calls": [_call("toolu_a", "Bash", {"command": "ls"})],
            "observation": {"results": [{"source_call_id": "toolu_a", "content": decorated}]},
        },
        {"source": "agent", "message": "Two files; util.py holds `add`."},
    ]
    expected = [
        Message(role="user", content=task),
        Message(
            role="assistant",
            content="Listing the files.",
            tool_calls=[ToolCall(id="toolu_a", name="Bash", arguments={"command": "ls"})],
        ),
        Message(role="tool", content=listing, tool_call_id="toolu_a"),
        Message(role="assistant", content="Two files; util.py holds `add`."),
    ]
    return AtifShape(
        "claude-decorated",
        "claude-code",
        {"trajectory.json": _doc("claude-code", steps)},
        [("main", None, expected)],
        source_turns=2,
    )


def _terminus_rebuilt(task: str) -> AtifShape:
    screen = "New Terminal Output:\n\nroot@testbed:/testbed# "
    steps = [
        {"source": "user", "message": task},
        {
            "source": "agent",
            "message": "Analysis: Nothing run yet.\nPlan: Inspect and run the tests.",
            "tool_calls": [
                _call("call_0_1", "bash_command", {"keystrokes": "cat util.py\n", "duration": 0.1}),
                _call("call_0_2", "bash_command", {"keystrokes": "pytest -q\n", "duration": 5.0}),
            ],
            "observation": {"results": [{"content": screen + "cat util.py\n...\n1 failed"}]},
        },
        {
            "source": "agent",
            "message": "Analysis: Fixed.\nPlan: Done.",
            "tool_calls": [
                _call(
                    "call_1_1", "bash_command", {"keystrokes": "sed -i 's/-/+/' util.py\n", "duration": 0.1}
                ),
                _call("call_1_task_complete", "mark_task_complete", {}),
            ],
            "observation": {"results": [{"content": screen}]},
        },
    ]
    return AtifShape(
        "terminus-rebuilt",
        "terminus-2",
        {"trajectory.json": _doc("terminus-2", steps, "ATIF-v1.6")},
        [],
        rejected={"rebuilt_atif": 2},
        source_turns=2,
    )


def _terminus_summarised(task: str) -> AtifShape:
    def reply(analysis: str, keystrokes: str, complete: bool = False) -> str:
        commands = [{"keystrokes": keystrokes, "duration": 0.1}] if keystrokes else []
        return json.dumps(
            {"analysis": analysis, "plan": "Next step.", "commands": commands, "task_complete": complete},
            indent=2,
        )

    screen = "New Terminal Output:\n\nroot@testbed:/testbed# "
    a1, a2 = (
        reply("Start by reading util.py.", "cat util.py\n"),
        reply("add subtracts.", "grep -n add util.py\n"),
    )
    summary_prompt = "You are about to hand off your work to another AI agent. Summarise what you did."
    summary = "I read util.py; `add` returns a - b."
    question_prompt = (
        f"You are picking up work from a previous AI agent.\n\n**Summary:**\n{summary}\n\nAsk questions."
    )
    questions = "1. Has util.py been changed yet?"
    answers = "1. No, util.py is unchanged."
    handoff = f"Here are the answers the other agent provided.\n\n{answers}\n\nContinue working on this task."
    a3, a4 = reply("Fix it now.", "sed -i 's/a - b/a + b/' util.py\n"), reply("Done.", "", complete=True)
    refs = [
        {"trajectory_path": f"trajectory.summarization-1-{k}.json"}
        for k in ("summary", "questions", "answers")
    ]
    main = [
        {"source": "user", "message": task},
        {
            "source": "agent",
            "message": a1,
            "observation": {"results": [{"content": screen + "cat util.py\ndef add(a, b): return a - b"}]},
        },
        {
            "source": "agent",
            "message": a2,
            "observation": {"results": [{"content": screen + "grep -n add util.py\n1:def add"}]},
        },
        {
            "source": "system",
            "message": "Performed context summarization and handoff to continue task.",
            "observation": {"results": [{"subagent_trajectory_ref": refs}]},
            "extra": {"context_management": {"type": "compaction", "boundary": "replace"}},
        },
        {"source": "user", "message": handoff},
        {"source": "agent", "message": a3, "observation": {"results": [{"content": screen}]}},
        {"source": "agent", "message": a4, "observation": {"results": [{"content": screen}]}},
    ]

    def copied() -> list[dict[str, Any]]:
        return [dict(json.loads(json.dumps(s)), is_copied_context=True) for s in main[:3]]

    files = {
        "trajectory.json": _doc("terminus-2", main, "ATIF-v1.7"),
        "trajectory.summarization-1-summary.json": _doc(
            "terminus-2-summarization-summary",
            [
                *copied(),
                {"source": "user", "message": summary_prompt},
                {"source": "agent", "message": summary},
            ],
        ),
        "trajectory.summarization-1-questions.json": _doc(
            "terminus-2-summarization-questions",
            [{"source": "user", "message": question_prompt}, {"source": "agent", "message": questions}],
        ),
        "trajectory.summarization-1-answers.json": _doc(
            "terminus-2-summarization-answers",
            [
                *copied(),
                {"source": "user", "message": summary_prompt, "is_copied_context": True},
                {"source": "agent", "message": summary, "is_copied_context": True},
                {"source": "user", "message": f"The next agent has a few questions for you:\n\n{questions}"},
                {"source": "agent", "message": answers},
            ],
        ),
    }
    obs = [s["observation"]["results"][0]["content"] for s in main if s["source"] == "agent"]
    expected = [
        (
            "main",
            None,
            [
                Message(role="user", content=task),
                Message(role="assistant", content=a1),
                Message(role="user", content=obs[0]),
                Message(role="assistant", content=a2),
            ],
        ),
        (
            "main",
            None,
            [
                Message(role="user", content=handoff),
                Message(role="assistant", content=a3),
                Message(role="user", content=obs[2]),
                Message(role="assistant", content=a4),
            ],
        ),
        (
            "subagent",
            "summarization-1-summary",
            [Message(role="user", content=summary_prompt), Message(role="assistant", content=summary)],
        ),
        (
            "subagent",
            "summarization-1-questions",
            [Message(role="user", content=question_prompt), Message(role="assistant", content=questions)],
        ),
        (
            "subagent",
            "summarization-1-answers",
            [
                Message(role="user", content=f"The next agent has a few questions for you:\n\n{questions}"),
                Message(role="assistant", content=answers),
            ],
        ),
    ]
    return AtifShape("terminus-summarised", "terminus-2", files, expected, source_turns=7)


def atif_shapes(task: str) -> list[AtifShape]:
    """Every ATIF-only shape, for one task prompt."""
    return [
        builder(task)
        for builder in (
            _codex,
            _openhands,
            _gemini,
            _claude_decorated,
            _terminus_rebuilt,
            _terminus_summarised,
        )
    ]
