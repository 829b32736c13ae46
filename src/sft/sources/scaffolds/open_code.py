"""open-code (Harbor agent ``opencode``): cumulative log with auxiliary title-generator calls.

LiteLLM log: title-generator side calls are dropped first, then prefix dedup and main/subagent split as
for claude-code. ATIF is read generically (no system prompt or tool schemas there).
"""

from __future__ import annotations

from typing import Any

from sft.core.canonical import Trajectory
from sft.sources.harbor import litellm
from sft.sources.harbor.job import TrialInfo
from sft.sources.scaffolds.base import AdapterReport, ScaffoldAdapter
from sft.sources.scaffolds.claude_code import main_and_subagents

_TITLE_SYSTEM_MARKERS = ("you are a title generator", "generate a title", "thread title")
_TITLE_USER_PREFIX = "generate a title for this conversation"


def _texts(record: dict[str, Any], role: str) -> list[str]:
    texts = []
    if role == "system" and litellm.request_system(record) is not None:
        texts.append(litellm.content_text(litellm.request_system(record)))
    for message in litellm.request_input(record):
        if isinstance(message, dict) and message.get("role") == role:
            texts.append(litellm.content_text(message.get("content")))
    return texts


def title_generator_reason(record: dict[str, Any]) -> str | None:
    """Why a call is OpenCode's session-title side call, or None. Conservative: no tools, no assistant turns
    with tool calls, and a system prompt or user turn that asks for a title."""
    if litellm.request_tools(record):
        return None
    for message in litellm.request_input(record):
        if (
            isinstance(message, dict)
            and message.get("role") in ("assistant", "tool")
            and (message.get("tool_calls") or message.get("role") == "tool")
        ):
            return None
    system = " ".join(_texts(record, "system")).lower()
    marker = next((m for m in _TITLE_SYSTEM_MARKERS if m in system), None)
    if marker:
        return f"title-generator side call (no tools; system prompt contains {marker!r})"
    if any(t.strip().lower().startswith(_TITLE_USER_PREFIX) for t in _texts(record, "user")):
        return f"title-generator side call (no tools; a user turn starts with {_TITLE_USER_PREFIX!r})"
    return None


class OpenCodeAdapter(ScaffoldAdapter):
    name = "open-code"
    harbor_agent_names = ("opencode", "open-code", "opencode-v2")

    def trajectories_from_log(
        self, records: list[dict[str, Any]], info: TrialInfo, source_file: str, report: AdapterReport
    ) -> list[Trajectory]:
        before = report.counters["side_calls_dropped"]
        conversations = self.cumulative_conversations(
            records, report, side_call_reason=title_generator_reason
        )
        report.counters["title_generator_dropped"] += report.counters["side_calls_dropped"] - before
        return main_and_subagents(self, conversations, info, source_file)
