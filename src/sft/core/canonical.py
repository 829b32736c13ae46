"""The canonical trajectory: the one model every scaffold maps into and every output is rendered from.

OpenAI-style messages (``reasoning_content`` beside ``content``, ``tool_calls`` with ids), the tool
schemas offered to the model, and the provenance of the conversation. Scaffold adapters build it;
validation, filters, scoring, rendering to LLaMA-Factory and statistics all read it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]
AgentType = Literal["main", "subagent"]
SourceKind = Literal["litellm", "atif", "ready"]


class ToolCall(BaseModel):
    """One function call made by the assistant."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    name: str
    # A JSON object after parsing; anything else (an unparsable string, a list) is kept as-is so that
    # validation can reject it with the offending value instead of silently "fixing" it.
    arguments: Any = Field(default_factory=dict)


class Message(BaseModel):
    """One conversation turn."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str = ""
    reasoning_content: str = ""  # assistant only
    tool_calls: list[ToolCall] = Field(default_factory=list)  # assistant only
    tool_call_id: str | None = None  # tool only: the call this result answers
    is_error: bool = False  # tool only: the tool reported failure (e.g. <tool_use_error>)
    # False for turns the model did not produce in this conversation (ATIF copied context,
    # deterministic dispatches with llm_call_count == 0): kept as context, never trained.
    trainable: bool = True


class TrajectoryMeta(BaseModel):
    """Where a conversation came from; carried into every output row."""

    model_config = ConfigDict(extra="forbid")

    instance_id: str
    repo: str | None = None  # owner/repo for SWE-style ids (owner__repo-123)
    trial_name: str
    scaffold: str
    agent_type: AgentType = "main"
    agent_id: str | None = None  # subagent identifier (claude-code Task agents, summarisation kind, ...)
    teacher_model: str | None = None
    reward: float | None = None
    exception_type: str | None = None
    source_kind: SourceKind
    source_file: str  # path relative to the job dir
    trajectory_index: int = 0  # position among the trial's trajectories (deterministic order)
    usage: dict[str, Any] = Field(default_factory=dict)
    gen_params: dict[str, Any] = Field(default_factory=dict)
    score: dict[str, Any] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class Trajectory(BaseModel):
    """One conversation, ready to be validated, filtered and rendered."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    tools: list[dict[str, Any]] = Field(default_factory=list)  # {"type": "function", "function": {...}}
    meta: TrajectoryMeta

    @property
    def uid(self) -> str:
        """A stable id: ``<trial>#<index>``."""
        return f"{self.meta.trial_name}#{self.meta.trajectory_index}"


class Reject(BaseModel):
    """Why a trial or a trajectory is not in the output. One line of the rejects file."""

    model_config = ConfigDict(extra="forbid")

    trial_name: str
    instance_id: str | None = None
    trajectory: str | None = None  # Trajectory.uid when one trajectory (not the whole trial) is rejected
    stage: str  # discover | parse | outcome | repo_exclusion | validate | max_instances | per_instance_cap |
    #             dedup | overlength | min_score | lf_rules | scaffold
    reason: str  # short machine-friendly code, e.g. "no_result_json"
    detail: str = ""  # human sentence naming the file / field / value


# Issue notes are strings "<code>: <detail>"; repair notes have codes starting with "repair_".
def issue_code(issue: str) -> str:
    """The machine-friendly code of an issue string (the text before the first ``:``)."""
    return issue.split(":", 1)[0].strip()


def is_repair(issue: str) -> bool:
    """True for notes about a repair made (the trajectory was kept), False for rejection reasons."""
    return issue_code(issue).startswith("repair_")


def first_untrainable_assistant(messages: list[Message]) -> int | None:
    """Index of the first assistant turn marked ``trainable=False``, or None."""
    for index, message in enumerate(messages):
        if message.role == "assistant" and not message.trainable:
            return index
    return None
