"""Small constructors for crafted canonical trajectories (keeps the tests readable)."""

from __future__ import annotations

from typing import Any

from sft.core.canonical import Message, ToolCall, Trajectory, TrajectoryMeta

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "description": "Run a shell command",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    },
]


def system(text: str = "You are a coding agent.") -> Message:
    return Message(role="system", content=text)


def user(text: str = "Fix the bug in foo.py") -> Message:
    return Message(role="user", content=text)


def call(name: str = "bash", arguments: Any = None, id: str = "") -> ToolCall:
    return ToolCall(id=id, name=name, arguments={"command": "ls"} if arguments is None else arguments)


def assistant(
    content: str = "", reasoning: str = "", calls: list[ToolCall] | None = None, trainable: bool = True
) -> Message:
    return Message(
        role="assistant",
        content=content,
        reasoning_content=reasoning,
        tool_calls=calls or [],
        trainable=trainable,
    )


def tool(content: str = "ok", id: str | None = None, is_error: bool = False) -> Message:
    return Message(role="tool", content=content, tool_call_id=id, is_error=is_error)


def meta(**overrides: Any) -> TrajectoryMeta:
    values: dict[str, Any] = {
        "instance_id": "django__django-12345",
        "repo": "django/django",
        "trial_name": "django__django-12345__abc",
        "scaffold": "claude-code",
        "source_kind": "atif",
        "source_file": "agent/trajectory.json",
    }
    values.update(overrides)
    return TrajectoryMeta(**values)


def traj(*messages: Message, tools: list[dict[str, Any]] | None = None, **meta_overrides: Any) -> Trajectory:
    return Trajectory(
        messages=list(messages), tools=TOOLS if tools is None else tools, meta=meta(**meta_overrides)
    )


def simple(final: str = "Done.") -> Trajectory:
    """system, user, one call + result, final answer."""
    return traj(system(), user(), assistant(calls=[call(id="c1")]), tool("a.py", id="c1"), assistant(final))
